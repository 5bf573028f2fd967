//! Starting a job, in steps: prepare (log, environment, sandbox, approval endpoint, the driver's argv,
//! egress), spawn the agent into its cgroup with readers on its streams, then mark it running.

use super::*;
use tokio::sync::mpsc::UnboundedSender;

/// What goes to an agent's stdin after its opening, while its driver keeps it open.
pub(super) enum StdinMsg {
    Line(String),
    End,
}

/// The writer of an agent's stdin.
pub(super) type Input = UnboundedSender<StdinMsg>;

/// Everything made ready before the agent starts.
pub(super) struct Prepared {
    /// The agent's program, as found on `PATH`.
    program: PathBuf,
    /// What is started: the agent, or the egress relay that starts it.
    program_path: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    worktree: PathBuf,
    base_commit: Option<String>,
    log: Arc<JobLog>,
    log_path: PathBuf,
    /// The opening of stdin, and whether it stays open.
    stdin: (String, bool),
    /// The driver's reader of this job's output.
    output: Box<dyn crate::agents::AgentOutput>,
    endpoint: JobEndpoint,
}

/// A started agent.
pub(super) struct Started {
    pub(super) pid: i32,
    pub(super) log: Arc<JobLog>,
    pub(super) log_path: PathBuf,
    pub(super) base_commit: Option<String>,
    pub(super) last_output_ms: Arc<AtomicI64>,
    pub(super) cgroup: Option<crate::cgroup::JobCgroup>,
    pub(super) input: Option<Input>,
    pub(super) endpoint: JobEndpoint,
}

impl Runner {
    /// The job's log, environment, sandbox, approval endpoint and argv; the job's `base_commit` is set.
    pub(super) async fn prepare(
        &self,
        a: &mut RunnerArgs,
        driver: &'static dyn AgentDriver,
    ) -> Result<Prepared, ActorProcessingErr> {
        let core = &self.core;
        let config = core.config();
        let command = config
            .agent
            .agents
            .get(driver.name())
            .cloned()
            .ok_or_else(|| {
                format!(
                    "agent {} is not configured (agents.{} in the configuration); configured: {}",
                    driver.name(),
                    driver.name(),
                    config.agent.names().join(", ")
                )
            })?;
        let program = crate::agent_path::find(&command.command).ok_or_else(|| {
            format!(
                "agent command {:?} not found (agents.{}.command)",
                command.command,
                driver.name()
            )
        })?;
        let worktree = PathBuf::from(&a.session.worktree_path);
        let base_commit = core.git().head_commit(&worktree).await.ok().flatten();
        a.job.base_commit = base_commit.clone();
        let log_path = core.layout().job_logs().join(format!("{}.log", a.job.id));
        let log = Arc::new(JobLog::create(&log_path, core.config().jobs.max_log_bytes)?);
        // The log names the job's agent first (`agent codex`).
        log.line("agent", driver.name());
        let mut env = vec![
            ("TELEVIBE_PROJECT_ID".to_string(), a.project.id.clone()),
            ("TELEVIBE_SESSION_ID".to_string(), a.session.id.clone()),
            ("TELEVIBE_JOB_ID".to_string(), a.job.id.clone()),
            ("TELEVIBE_BRANCH".to_string(), a.session.branch.clone()),
            (
                "TELEVIBE_WORKSPACE".to_string(),
                a.session.worktree_path.clone(),
            ),
        ];
        env.extend(command.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        // A model address written in the agent's own arguments is the model API's, as if in its `env`.
        let base_url_env = driver.model_api().base_url_env;
        if let Some(url) = driver.model_upstream(&command.extra_args)
            && !env.iter().any(|(k, _)| k == base_url_env)
        {
            env.push((base_url_env.to_string(), url));
        }
        let run_dir = sandbox::run_dir(&core.config().root, &a.job.id);
        let plan = self
            .sandbox_plan(a, driver, &program, &run_dir, base_commit.as_deref())
            .await?;
        if let Some(plan) = &plan {
            env.extend(plan.env());
        }
        // The job's approval endpoint, for an agent that reaches it through a tool server it starts.
        let (bridge, serve) = match driver.approval_bridge() {
            crate::agents::ApprovalBridge::McpTool => {
                let (endpoint_path, serve) = open_endpoint(
                    core,
                    &a.job.id,
                    &run_dir,
                    plan.as_ref().and_then(|p| p.user),
                )?;
                let token = core.jobs().issue_job_token(&a.job.id);
                let bridge = bridge_command(&a.job.id, &token, &endpoint_path);
                (Some(bridge), Some(serve))
            }
            crate::agents::ApprovalBridge::Stream => (None, None),
        };
        let trusted = a.project.trusted || core.config().trusted_projects.contains(&a.project.id);
        let isolated = plan.as_ref().is_some_and(|p| p.isolate_network);
        let model_base_url = model_base_url(driver, &env, isolated);
        let spec = crate::agents::LaunchSpec {
            job_id: &a.job.id,
            instruction: &a.job.instruction,
            resume: a.session.conversation(driver.name()),
            approvals: bridge.as_ref(),
            trusted,
            extra_args: &command.extra_args,
            model_base_url: model_base_url.as_deref(),
            cwd: &a.session.worktree_path,
        };
        let launch = driver.launch(&spec);
        let output = driver.output(&spec);
        env.extend(launch.env);
        let (mut program_path, mut args) = (program.clone(), launch.args);
        let mut egress = None;
        let limit_reset = crate::egress::LimitReset::default();
        if let Some(p) = plan.as_ref().filter(|p| p.isolate_network) {
            let (socket, serve) = open_egress(core, p, &a.job.id, &mut env, limit_reset.clone())?;
            egress = Some(serve);
            program_path = std::env::current_exe()
                .map_err(|e| format!("cannot find the daemon binary: {e}"))?;
            args = relayed(&program, &socket, driver.model_api().base_url_env, args);
        }
        Ok(Prepared {
            program,
            program_path,
            args,
            env,
            worktree,
            base_commit,
            log,
            log_path,
            stdin: (launch.stdin, launch.keep_stdin_open),
            output,
            endpoint: JobEndpoint {
                _serve: serve,
                _egress: egress,
                run_dir,
                plan,
                limit_reset,
            },
        })
    }

    /// Starts the agent (in its cgroup where there is one) with readers on its streams and a watcher of
    /// its exit, all reporting to `myself`.
    pub(super) fn spawn_agent(
        &self,
        myself: &ActorRef<RunnerMsg>,
        a: &RunnerArgs,
        p: Prepared,
    ) -> Result<Started, ActorProcessingErr> {
        let mut cgroup = job_cgroup(&self.core, &a.job.id);
        let cmd = AgentCommand {
            program: &p.program_path,
            args: p.args,
            cwd: &p.worktree,
            env: p.env,
            sandbox: p.endpoint.plan.as_ref(),
            cgroup_procs: cgroup.as_ref().map(|c| c.procs_fd()),
        };
        let mut child = process::spawn(&cmd)
            .map_err(|e| format!("cannot start {}: {e}", p.program.display()))?;
        let pid = child
            .id()
            .ok_or("agent exited before it could be tracked")? as i32;
        if cgroup.as_ref().is_some_and(|c| !c.holds(pid))
            && child.try_wait().ok().flatten().is_none()
        {
            tracing::warn!(target: "televibe.runner", job_id = %a.job.id, "The agent did not enter its cgroup; its CPU is counted over its process tree");
            cgroup = None;
        }
        let last_output_ms = Arc::new(AtomicI64::new(now_ms()));
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let (opening, keep_open) = p.stdin;
        let input = feed_stdin(stdin, opening, keep_open);
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (me, log, last) = (myself.clone(), p.log.clone(), last_output_ms.clone());
        let (output, to_stdin) = (p.output, input.clone());
        tokio::spawn(read_output(stdout, output, to_stdin, me, log, last));
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (me, log, last) = (myself.clone(), p.log.clone(), last_output_ms.clone());
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            while let Ok(Some(line)) = read_line_capped(&mut reader, &mut buf).await {
                last.store(now_ms(), Ordering::Relaxed);
                log.line("stderr", &line);
            }
            let _ = me.cast(RunnerMsg::StreamClosed);
        });
        let me = myself.clone();
        tokio::spawn(async move {
            use std::os::unix::process::ExitStatusExt;
            let status = child.wait().await.ok();
            let _ = me.cast(RunnerMsg::Exited {
                code: status.and_then(|s| s.code()),
                signal: status.and_then(|s| s.signal()),
            });
        });
        Ok(Started {
            pid,
            log: p.log,
            log_path: p.log_path,
            base_commit: p.base_commit,
            last_output_ms,
            cgroup,
            input,
            endpoint: p.endpoint,
        })
    }

    /// Records the job as running (a job ended meanwhile takes its agent down), tells its session and the
    /// core, and arms the heartbeat and the hard timeout.
    pub(super) async fn mark_running(
        &self,
        myself: &ActorRef<RunnerMsg>,
        a: &RunnerArgs,
        s: &Started,
    ) -> Result<(), ActorProcessingErr> {
        let core = &self.core;
        let pid = s.pid;
        let marked = core
            .store()
            .mark_job_running(
                &a.job.id,
                Some(pid),
                &s.log_path.display().to_string(),
                s.base_commit.clone(),
            )
            .await;
        match marked {
            Ok(true) => {}
            // Canceled or killed while starting, or the store refused: the agent must not outlive this.
            Ok(false) => {
                process::signal_group(pid, libc::SIGKILL);
                return Err(format!("job {} was ended before its agent started", a.job.id).into());
            }
            Err(e) => {
                process::signal_group(pid, libc::SIGKILL);
                return Err(e.into());
            }
        }
        (a.report_to)(Report::Started {
            job_id: a.job.id.clone(),
            pgid: pid,
        });
        core.jobs().job_started(&a.job, &a.session, pid).await;
        let jobs = &core.config().jobs;
        // Heartbeats come well inside the session's limit; hang checks a few times per hang timeout.
        let tick = (jobs.hang_timeout / 4)
            .min(jobs.heartbeat_timeout / 3)
            .clamp(Duration::from_millis(250), Duration::from_secs(5));
        myself.send_interval(tick, || RunnerMsg::Tick);
        myself.send_after(jobs.hard_timeout, || RunnerMsg::HardTimeout);
        tracing::info!(target: "televibe.runner", job_id = %a.job.id, session_id = %a.session.id, project_id = %a.project.id, agent = %a.job.agent, pid, instruction_preview = %preview(&a.job.instruction), "Job started");
        Ok(())
    }
}

/// Where an agent that cannot be pointed at its model API by a variable finds it: at the relay inside an
/// isolated sandbox, else at the variable's value (its default address without one); only when the
/// operator gave the agent an address or a key (in its `env` or the daemon's environment, which jobs
/// inherit), else the agent's own login and default address are left alone.
fn model_base_url(
    driver: &'static dyn AgentDriver,
    env: &[(String, String)],
    isolated: bool,
) -> Option<String> {
    let api = driver.model_api();
    let set = |name: &str| super::launch::env_value(env, name);
    let given = set(api.base_url_env);
    if given.is_none() && !api.secrets.iter().any(|s| set(s).is_some()) {
        return None;
    }
    Some(if isolated {
        format!("http://127.0.0.1:{}", crate::egress::relay::PORT)
    } else {
        given.unwrap_or_else(|| api.default_upstream.to_string())
    })
}

/// Inside an isolated sandbox the relay (this binary, bound into every sandbox) starts the agent and
/// carries its proxy and model connections from the sandbox's own loopback to the egress `socket`; the
/// agent finds its model API at the relay through variable `model_env`.
fn relayed(
    program: &std::path::Path,
    socket: &std::path::Path,
    model_env: &str,
    args: Vec<String>,
) -> Vec<String> {
    let mut relay: Vec<String> = vec![
        "sandbox-relay".into(),
        "--socket".into(),
        socket.display().to_string(),
        "--port".into(),
        crate::egress::relay::PORT.to_string(),
        "--model-env".into(),
        model_env.into(),
        "--".into(),
        program
            .canonicalize()
            .unwrap_or_else(|_| program.to_path_buf())
            .display()
            .to_string(),
    ];
    relay.extend(args);
    relay
}

/// Writes the opening to the agent's stdin; closes it then, or, when the driver keeps it open, writes
/// each further line until `End` (or the runner is gone). The sender, only while open.
fn feed_stdin(
    mut stdin: tokio::process::ChildStdin,
    opening: String,
    keep_open: bool,
) -> Option<Input> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _ = stdin.write_all(opening.as_bytes()).await;
        while keep_open && let Some(StdinMsg::Line(line)) = rx.recv().await {
            let written = stdin.write_all(format!("{line}\n").as_bytes()).await;
            if written.is_err() {
                break;
            }
        }
        let _ = stdin.shutdown().await;
    });
    keep_open.then_some(tx)
}

/// The agent's stdout: each line to the job log and through the driver's reader; its events go to the
/// runner, its replies to stdin.
async fn read_output(
    stdout: tokio::process::ChildStdout,
    mut output: Box<dyn crate::agents::AgentOutput>,
    input: Option<Input>,
    me: ActorRef<RunnerMsg>,
    log: Arc<JobLog>,
    last: Arc<AtomicI64>,
) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    // Only the last assistant text matters (a fallback for the result): it is kept here and handed over
    // once, so a chatty agent does not fill the runner's mailbox with text.
    let mut last_text = None;
    let to_stdin = |msg: StdinMsg| {
        if let Some(input) = &input {
            let _ = input.send(msg);
        }
    };
    while let Ok(Some(line)) = read_line_capped(&mut reader, &mut buf).await {
        last.store(now_ms(), Ordering::Relaxed);
        log.line("stdout", &line);
        let mut events = output.line(&line);
        events.retain_mut(|e| match e {
            AgentEvent::Text(t) => {
                last_text = Some(std::mem::take(t));
                false
            }
            AgentEvent::Unknown(_) => false,
            // Counted, not kept: the line is in the job log.
            AgentEvent::Malformed(l) => {
                l.clear();
                true
            }
            AgentEvent::Reply(r) => {
                to_stdin(StdinMsg::Line(std::mem::take(r)));
                false
            }
            AgentEvent::EndInput => {
                to_stdin(StdinMsg::End);
                false
            }
            _ => true,
        });
        if !events.is_empty() {
            let _ = me.cast(RunnerMsg::Events(events));
        }
    }
    if let Some(t) = last_text {
        let _ = me.cast(RunnerMsg::Events(vec![AgentEvent::Text(t)]));
    }
    let _ = me.cast(RunnerMsg::StreamClosed);
}

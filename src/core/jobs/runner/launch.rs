//! What a job starts with: its run directory and approval endpoint, the stdio bridge an agent's tool
//! server reaches it by, its egress proxy, and the sandbox plan. The agent's own argv is its driver's.

use super::*;

/// The job's approval endpoint and run directory: the listener stops and the directory (socket, copy of
/// the refs) goes when the runner's state drops, so the endpoint dies with the job.
pub(super) struct JobEndpoint {
    /// The approval endpoint's listener (`None`: the agent asks on its own stream).
    pub(super) _serve: Option<tokio_util::task::AbortOnDropHandle<()>>,
    /// The job's egress proxy, when its network is isolated.
    pub(super) _egress: Option<tokio_util::task::AbortOnDropHandle<()>>,
    pub(super) run_dir: PathBuf,
    /// The job's sandbox (`None`: unconfined by the operator's choice).
    pub(super) plan: Option<SandboxPlan>,
    /// The reset of the last 429 its model API answered, as its egress proxy saw it.
    pub(super) limit_reset: crate::egress::LimitReset,
}

impl Drop for JobEndpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// Binds the job's approval socket (0600, in a 0700 directory of its run directory) and serves it.
pub(super) fn open_endpoint(
    core: &Arc<Core>,
    job_id: &str,
    run_dir: &std::path::Path,
    user: Option<sandbox::JobUser>,
) -> Result<(std::path::PathBuf, tokio_util::task::AbortOnDropHandle<()>), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = sandbox::approval_dir(run_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("sock");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    // The job's own user (the daemon is root) connects to it; the directory is the job's already.
    if let Some(u) = user {
        std::os::unix::fs::lchown(&path, Some(u.uid), Some(u.gid)).map_err(|e| e.to_string())?;
    }
    let server = core
        .approval_server()
        .ok_or("no approval endpoint server is installed")?;
    let serve = tokio::spawn(server(listener, core.clone(), job_id.to_string()));
    Ok((path, tokio_util::task::AbortOnDropHandle::new(serve)))
}

/// The job's egress proxy (`agent.network = "allowlist"`): a socket in its run directory, bound into
/// the sandbox, served until the job ends. The agent's model API (its driver's base URL variable, else the
/// public one) is reached through it with the credential added by the daemon; other hosts only if listed
/// in `agent.network_allow`. `env` loses the real credentials, the variables the driver names (they never
/// enter an isolated sandbox: placeholders instead, swapped for the real values on the way). Returns the
/// socket.
pub(super) fn open_egress(
    core: &Arc<Core>,
    plan: &SandboxPlan,
    job_id: &str,
    env: &mut Vec<(String, String)>,
    limit_reset: crate::egress::LimitReset,
) -> Result<(std::path::PathBuf, tokio_util::task::AbortOnDropHandle<()>), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = sandbox::egress_dir(&plan.run_dir).join("sock");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    if let Some(u) = plan.user {
        std::os::unix::fs::lchown(&path, Some(u.uid), Some(u.gid)).map_err(|e| e.to_string())?;
    }
    let api = plan.agent.model_api();
    let upstream =
        env_value(env, api.base_url_env).unwrap_or_else(|| api.default_upstream.to_string());
    let mut secrets = Vec::new();
    for name in api.secrets {
        if let Some(real) = env_value(env, name) {
            let placeholder = format!("televibe-placeholder-{}", uuid::Uuid::new_v4().simple());
            env.retain(|(k, _)| k != name);
            env.push((name.to_string(), placeholder.clone()));
            secrets.push((placeholder, real));
        }
    }
    let rules = Arc::new(crate::egress::EgressRules {
        allow: core.config().agent.network_allow.clone(),
        model: Some(crate::egress::ModelRoute {
            upstream,
            secrets,
            // The operator's `/login`: the job's copy holds the plan's placeholder, the proxy the real,
            // refreshed token.
            fresh: api
                .oauth
                .zip(plan.agent.files().credentials)
                .map(|(client, credentials)| {
                    (
                        plan.login_placeholder.clone(),
                        crate::egress::login::OAuthLogin::new(
                            &plan.operator_state.join(credentials),
                            &core.config().agent.oauth_token_url,
                            client.client_id,
                            client.entry,
                        ),
                    )
                })
                .into_iter()
                .collect(),
            limit_reset,
        }),
    });
    let (metrics, job) = (core.metrics().clone(), job_id.to_string());
    let refused: crate::egress::Refused = Arc::new(move |host: &str| {
        metrics.egress_refused_total.inc();
        tracing::warn!(target: "televibe.egress", job_id = %job, host = %host, "Egress refused: the host is not on agent.network_allow");
    });
    let serve = tokio::spawn(crate::egress::serve(listener, rules, refused));
    Ok((path, tokio_util::task::AbortOnDropHandle::new(serve)))
}

/// Variable `name` as the job gets it: the last setting in `env` (the job's additions), else the daemon's
/// own environment, which jobs inherit; empty counts as unset.
pub(super) fn env_value(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var(name).ok())
        .filter(|v| !v.is_empty())
}

/// The daemon's stdio bridge to the job's approval endpoint: `televibe mcp --job <id>` with the job's
/// secret, which sees exactly one tool, `approval_prompt`, for this job only.
pub fn bridge_command(job_id: &str, token: &str, endpoint: &std::path::Path) -> BridgeCommand {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "televibe".into());
    BridgeCommand {
        program: exe,
        args: [
            "mcp",
            "--job",
            job_id,
            "--socket",
            &endpoint.display().to_string(),
        ]
        .map(String::from)
        .to_vec(),
        env: vec![("TELEVIBE_JOB_TOKEN".into(), token.into())],
    }
}

/// How long the host side of a sandbox may take to get ready (copies of the refs, handing the worktree
/// to the job's user).
const PREPARE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Runner {
    /// The job's sandbox, or `None` when the operator set `agent.sandbox = "none"`. A job that should
    /// be sandboxed but cannot be does not start.
    pub(super) async fn sandbox_plan(
        &self,
        a: &RunnerArgs,
        driver: &'static dyn AgentDriver,
        program: &std::path::Path,
        run_dir: &std::path::Path,
        head: Option<&str>,
    ) -> Result<Option<SandboxPlan>, String> {
        let config = &self.core.config();
        if !config.agent.sandboxed {
            return Ok(None);
        }
        let bwrap = crate::agent_path::find("bwrap").ok_or(
            "cannot sandbox the agent: bwrap is not installed (Debian package bubblewrap); \
             agent.sandbox = \"none\" runs agents unconfined",
        )?;
        let plan = sandbox::plan_for(
            config,
            driver,
            bwrap,
            &a.project.id,
            &a.session.id,
            std::path::Path::new(&a.project.repo_path),
            std::path::Path::new(&a.session.worktree_path),
            run_dir.to_path_buf(),
            program,
        )
        .map_err(|e| format!("cannot sandbox the agent: {e}"))?;
        let (prepared, branch, head) = (
            plan.clone(),
            a.session.branch.clone(),
            head.map(str::to_string),
        );
        crate::safe_fs::blocking(PREPARE_TIMEOUT, "preparing the sandbox", move || {
            prepared.prepare(&branch, head.as_deref())?;
            prepared.hand_over().map_err(std::io::Error::other)
        })
        .await
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot sandbox the agent: {e}"))?;
        Ok(Some(plan))
    }
}

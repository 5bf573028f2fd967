//! The doctor's checks of the machine: the user it runs as, directories and their modes, free disk, the
//! socket, the agent and its sandbox, Telegram, and jobs running too long. Each finding names the command
//! that fixes it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use super::Report;
use crate::config::Config;
use crate::layout::Layout;
use crate::store::Store;

/// Free space under which a disk is a warning (the spec's DiskSpaceLow threshold) and a failure.
const DISK_WARN_BYTES: u64 = 5_000_000_000;
const DISK_FAIL_BYTES: u64 = 100_000_000;
/// A job running longer than this is the stuck-job runbook's trigger.
const STUCK_AFTER: chrono::Duration = chrono::Duration::hours(1);

/// The dedicated user of the README's Install, and how the daemon comes to run as it.
const DEDICATED_USER: &str = "sudo useradd --system --create-home --home-dir /var/lib/televibe --shell /usr/sbin/nologin televibe";

/// Who the daemon runs as (doctor runs as the daemon's user): root is a warning, since jobs still run
/// unprivileged as `agent.run_as` but the daemon holds root; an `agent.run_as` that jobs cannot run as
/// is a failure, since then no job starts.
pub(super) fn user(config: &Config, r: &mut Report) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        r.ok(
            "user",
            &format!(
                "runs as {} (uid {euid}); jobs run as this user in a user namespace with no capabilities",
                user_name(euid)
            ),
        );
        return;
    }
    let run_as = &config.agent.run_as;
    match crate::core::jobs::sandbox::resolve_user(run_as) {
        Ok(job) => r.warn(
            "user",
            &format!(
                "the daemon runs as root: jobs run as the unprivileged user {run_as} (uid {}) in a user namespace with every capability dropped, but the daemon itself holds root; a dedicated user is safer",
                job.uid
            ),
            &format!(
                "{DEDICATED_USER} && sudo chown -R televibe:televibe {}; then run the daemon as televibe: User=televibe and Group=televibe in its systemd unit (deploy/televibe.service has them)",
                config.root.display()
            ),
        ),
        Err(e) => r.fail(
            "user",
            &format!("the daemon runs as root and no job can start: {e}"),
            &format!(
                "sudo useradd --system --no-create-home --shell /usr/sbin/nologin televibe-agent and set agent.run_as = \"televibe-agent\"; better, run the daemon as its own user: {DEDICATED_USER}, then User=televibe in its systemd unit"
            ),
        ),
    }
}

/// The name of user `uid` in the password database, else the number.
fn user_name(uid: u32) -> String {
    // SAFETY: an all-zero passwd is a valid value (null pointers, zero ids); getpwuid_r fills it.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pw` and `buf`, both ours and sized as passed; `found` is null or `&pw`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pw.pw_name.is_null() {
        return uid.to_string();
    }
    // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`.
    unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned()
}

pub(super) fn directories(config: &Config, layout: &Layout, r: &mut Report) {
    for dir in [
        layout.repos(),
        layout.workspaces(),
        layout.orchestrator(),
        layout.logs(),
    ] {
        if dir.is_dir() {
            r.ok("directories", &format!("{} exists", dir.display()));
        } else {
            r.fail(
                "directories",
                &format!("{} is missing", dir.display()),
                &format!(
                    "start the daemon once (it creates it), or: chown -R televibe:televibe {}",
                    config.root.display()
                ),
            );
        }
    }
}

/// Free space of each filesystem holding the root's parts (a worktree disk may be its own mount).
pub(super) fn disk(config: &Config, layout: &Layout, r: &mut Report) {
    let mut seen = Vec::new();
    for dir in [
        config.root.clone(),
        layout.repos(),
        layout.workspaces(),
        layout.orchestrator(),
    ] {
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        if seen.contains(&meta.dev()) {
            continue;
        }
        seen.push(meta.dev());
        let Some(free) = free_bytes(&dir) else {
            continue;
        };
        let what = format!(
            "{} free on the disk of {}",
            human_bytes(free),
            dir.display()
        );
        let fix = format!(
            "televibe admin cleanup (then --apply): old logs, old backups, stale worktrees; du -sh {}/* to see the rest",
            dir.display()
        );
        if free < DISK_FAIL_BYTES {
            r.fail("disk", &what, &fix);
        } else if free < DISK_WARN_BYTES {
            r.warn("disk", &format!("{what} (under 5 GB)"), &fix);
        } else {
            r.ok("disk", &what);
        }
    }
}

fn human_bytes(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Modes of the root, the orchestrator directory (it holds the socket and the secrets) and the socket.
pub(super) fn socket(config: &Config, r: &mut Report) {
    let sock = &config.socket_path;
    if let Some(dir) = sock.parent()
        && let Ok(meta) = std::fs::metadata(dir)
    {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o700 != 0o700 {
            r.fail(
                "permissions",
                &format!(
                    "socket directory {} has mode {mode:o}: its owner cannot read or enter it, so the daemon cannot create the socket and clients cannot reach it",
                    dir.display()
                ),
                &format!("chmod 700 {} (and chown televibe:televibe it)", dir.display()),
            );
        } else if mode & 0o077 != 0 {
            r.warn(
                "permissions",
                &format!("{} has mode {mode:o}: readable by others", dir.display()),
                &format!("chmod 700 {}", dir.display()),
            );
        } else {
            r.ok("permissions", &format!("{} mode {mode:o}", dir.display()));
        }
    }
    match std::fs::symlink_metadata(sock) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                r.fail(
                    "permissions",
                    &format!(
                        "socket {} has mode {mode:o}: other users could drive the daemon",
                        sock.display()
                    ),
                    &format!(
                        "chmod 600 {} (the daemon sets it at start: restart it)",
                        sock.display()
                    ),
                );
            } else {
                r.ok(
                    "permissions",
                    &format!("socket {} mode {mode:o}", sock.display()),
                );
            }
        }
        Err(_) => r.ok(
            "permissions",
            &format!(
                "no socket at {} (the daemon is not running)",
                sock.display()
            ),
        ),
    }
}

/// Every configured agent's binary and version.
pub(super) async fn agent(config: &Config, r: &mut Report) {
    for name in config.agent.names() {
        if let Some(driver) = crate::agents::by_name(name) {
            one_agent(config, driver, r).await;
        }
    }
}

/// An agent's binary, whether jobs can run it, and its version.
async fn one_agent(
    config: &Config,
    driver: &'static dyn crate::agents::AgentDriver,
    r: &mut Report,
) {
    let check = driver.version_check();
    let command = config.agent.of(driver.name()).command;
    let Some(path) = crate::agent_path::find(&command) else {
        r.warn(
            "agent",
            &format!("agent {} command {command:?} not found", driver.name()),
            &format!(
                "{} (or set agents.{}.command to its path)",
                check.install,
                driver.name()
            ),
        );
        return;
    };
    if let Ok(Some(user)) = crate::core::jobs::sandbox::job_user(config)
        && config.agent.sandboxed
        && !crate::core::jobs::sandbox::runnable_by(&path, user)
    {
        r.fail(
            "agent",
            &format!(
                "agent {} at {}: jobs run as agent.run_as {:?} (uid {}), which cannot run it; every job would fail",
                command,
                path.display(),
                config.agent.run_as,
                user.uid
            ),
            &format!(
                "{} (under /usr, where every user can run it), or chmod o+x the directories on the way",
                check.install_for_all
            ),
        );
        return;
    }
    if let Some(why) = unsafe_to_run(&path) {
        r.warn(
            "agent",
            &format!(
                "agent {} at {}: version not asked ({why})",
                command,
                path.display()
            ),
            &format!(
                "sudo -u televibe {} {} (as the daemon's user), or chown root and chmod go-w it",
                path.display(),
                check.args.join(" ")
            ),
        );
        return;
    }
    // Outside any sandbox, so with nothing of ours: no TELEVIBE_* (the bot token), no AWS_*, no agent.env.
    let mut cmd = tokio::process::Command::new(&path);
    cmd.args(check.args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(home) = std::env::var_os("HOME") {
        cmd.env("HOME", home);
    }
    let version = tokio::time::timeout(Duration::from_secs(20), cmd.output()).await;
    match version {
        Ok(Ok(out)) if out.status.success() => {
            let v = String::from_utf8_lossy(&out.stdout);
            r.ok(
                "agent",
                &format!(
                    "agent {} at {}: {}",
                    command,
                    path.display(),
                    v.lines().next().unwrap_or("").trim()
                ),
            );
        }
        Ok(Ok(out)) => r.warn(
            "agent",
            &format!(
                "{} {} failed ({}): {}",
                path.display(),
                check.args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            ),
            &format!("reinstall the agent: {}", check.install),
        ),
        Ok(Err(e)) => r.warn(
            "agent",
            &format!("cannot run {}: {e}", path.display()),
            &format!("chmod +x {} or reinstall the agent", path.display()),
        ),
        Err(_) => r.warn(
            "agent",
            &format!(
                "{} {} did not answer in 20 s",
                path.display(),
                check.args.join(" ")
            ),
            &format!("reinstall the agent: {}", check.install),
        ),
    }
}

/// Why running `path` as this user would be unsafe: as root, a binary (or its directory) that another user
/// could have replaced.
fn unsafe_to_run(path: &Path) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for p in [Some(path), path.parent()].into_iter().flatten() {
        let meta = std::fs::metadata(p).ok()?;
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Some(format!(
                "running as root, and {} is owned by uid {} with mode {:o}",
                p.display(),
                meta.uid(),
                meta.mode() & 0o7777
            ));
        }
    }
    None
}

/// Whether jobs can start in their sandbox. Answers what `--json` shows as `sandbox`.
pub(super) fn sandbox(config: &Config, r: &mut Report) -> String {
    if !config.agent.sandboxed {
        r.warn(
            "sandbox",
            &format!(
                "sandbox: {}: agent.sandbox = \"none\", jobs can read and write everything this user can",
                crate::core::jobs::sandbox::UNCONFINED
            ),
            "apt-get install bubblewrap, then set agent.sandbox = \"bwrap\"",
        );
        return crate::core::jobs::sandbox::UNCONFINED.to_string();
    }
    if !config.agent.network_allowlist {
        r.warn(
            "network",
            "network: open (agent.network = \"open\"): jobs share this machine's network, its loopback services, abstract sockets and /metrics included, and can send what they read anywhere",
            "set agent.network = \"allowlist\" and list the hosts jobs need in agent.network_allow",
        );
    }
    match crate::core::jobs::sandbox::check(crate::agent_path::find("bwrap").as_deref(), config) {
        Ok(()) => {
            r.ok("sandbox", "sandbox: ok (bubblewrap)");
            "ok".to_string()
        }
        Err(e) => {
            r.fail(
                "sandbox",
                &format!("sandbox: failed: {e}; jobs cannot start"),
                "apt-get install bubblewrap (or set agent.sandbox = \"none\" to run agents unconfined)",
            );
            format!("failed: {e}")
        }
    }
}

/// Whether jobs get cgroups of their own (CPU accounting for hang detection, `jobs.memory_max`): as the
/// running daemon reports it, else as this process would find it (changing nothing).
pub(super) fn cgroups(config: &Config, daemon: Option<&serde_json::Value>, r: &mut Report) {
    let fix = "run the daemon under systemd with the unit's Delegate=yes on a cgroup v2 system";
    let limit = match config.jobs.memory_max {
        0 => "off (jobs.memory_max = 0)".to_string(),
        n => format!("{} MiB", n >> 20),
    };
    let found = match daemon.map(|h| &h["cgroups"]).filter(|c| c.is_object()) {
        Some(c) if c["available"] == true => Ok((
            format!("the daemon's jobs get cgroups under {}", c["base"].as_str().unwrap_or("?")),
            c["memory_limit"] == true || config.jobs.memory_max == 0,
        )),
        Some(c) => Err(format!(
            "the daemon's jobs get no cgroups of their own: {}",
            c["reason"].as_str().unwrap_or("unknown")
        )),
        None => crate::cgroup::Cgroups::inspect()
            .map(|(base, memory)| {
                (
                    format!("jobs would get cgroups under {} (checked from this process; no daemon runs)", base.display()),
                    memory,
                )
            })
            .map_err(|e| format!("jobs would get no cgroups of their own (checked from this process; no daemon runs): {e}")),
    };
    match found {
        Ok((what, true)) => r.ok(
            "cgroups",
            &format!("{what} (CPU of all they start; memory limit {limit})"),
        ),
        Ok((what, false)) => r.warn(
            "cgroups",
            &format!("{what} for CPU accounting, but without the memory controller: jobs.memory_max is not enforced"),
            fix,
        ),
        Err(e) => r.warn(
            "cgroups",
            &format!("{e}; hang detection counts each job's process tree and jobs.memory_max is not enforced"),
            fix,
        ),
    }
}

/// `getMe` with the configured token.
pub(super) async fn telegram(config: &Config, r: &mut Report) {
    let Some(token) = config.telegram_token.as_deref() else {
        r.ok("telegram", "telegram: no token configured (MCP only)");
        return;
    };
    let probe = crate::telegram::TelegramProbe::new(&config.telegram.api_url, token);
    match probe.get_me(Duration::from_secs(10)).await {
        Ok(()) => r.ok("telegram", "telegram: getMe ok"),
        Err(e) => r.fail(
            "telegram",
            &format!("telegram: getMe failed: {e}"),
            "check the token (@BotFather), telegram.api_url and outbound HTTPS: curl -sS https://api.telegram.org",
        ),
    }
}

/// Jobs running for over an hour: the stuck-job runbook.
pub(super) async fn stuck_jobs(store: &Store, r: &mut Report) {
    let Ok(running) = store
        .jobs(None, Some(crate::domain::JobStatus::Running), 1000)
        .await
    else {
        return;
    };
    let now = chrono::Utc::now();
    let stuck: Vec<_> = running
        .iter()
        .filter(|j| j.started_at.is_some_and(|t| now - t > STUCK_AFTER))
        .collect();
    for j in &stuck {
        let age = (now - j.started_at.unwrap_or(now)).num_seconds().max(0) as u64;
        r.warn(
            "jobs",
            &format!(
                "job {} in session {} has been running for {} (pid {})",
                j.id,
                j.session_id,
                crate::admin::human_duration(age),
                j.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
            ),
            &format!(
                "televibe admin job kill {} with the daemon running (TERM, grace, KILL; the user is told it was terminated after getting stuck); a daemon that starts fails the jobs it finds running",
                j.id
            ),
        );
    }
    if stuck.is_empty() {
        r.ok(
            "jobs",
            &format!("{} running job(s), none over an hour", running.len()),
        );
    }
}

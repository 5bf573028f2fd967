//! Agent processes: spawning by argv in a new process group, signalling the group, reading its CPU time.
//!
//! Only the runner spawns processes. Signals go to the process group the runner created (`-pgid`), never
//! to a pid read back from somewhere.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;

use tokio::process::{Child, Command};

pub use crate::procs::{group_alive, group_members};

/// Environment variables never passed to an agent, on top of everything starting with `TELEVIBE_` and
/// `AWS_` (the object-store credentials of backup uploads; an agent that needs cloud access gets it
/// through `agent.env`, by the operator's choice).
/// Besides systemd's own, the addresses of the user's session bus, key agents and display, which lead
/// out of any sandbox.
const SCRUBBED: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "GPG_AGENT_INFO",
    "DBUS_SESSION_BUS_ADDRESS",
    "DBUS_SYSTEM_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
];

/// What the agent process is started with.
pub struct AgentCommand<'a> {
    pub program: &'a Path,
    pub args: Vec<String>,
    pub cwd: &'a Path,
    /// Added after scrubbing (`TELEVIBE_PROJECT_ID`… and `agent.env`).
    pub env: Vec<(String, String)>,
    /// The sandbox the agent runs in; `None` only when the operator chose `agent.sandbox = "none"`.
    pub sandbox: Option<&'a super::sandbox::SandboxPlan>,
    /// `cgroup.procs` of the job's cgroup, open for writing: the process enters it before it execs.
    pub cgroup_procs: Option<std::os::fd::RawFd>,
}

/// The daemon's environment minus its own settings and secrets.
pub fn scrubbed_env() -> HashMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| {
            !k.starts_with("TELEVIBE_") && !k.starts_with("AWS_") && !SCRUBBED.contains(&k.as_str())
        })
        .collect()
}

/// Spawns the agent as the leader of a new session (and so of a new process group), with piped stdio.
/// A session of its own has no controlling terminal, so the agent cannot push keystrokes into the
/// operator's terminal (TIOCSTI) when the daemon runs in one.
pub fn spawn(cmd: &AgentCommand<'_>) -> std::io::Result<Child> {
    let mut inherit: Vec<i32> = Vec::new();
    let mut user = None;
    let mut open = None;
    let mut command = match cmd.sandbox {
        Some(plan) => {
            let binds = plan.open_binds()?;
            inherit = binds.raw();
            user = plan.user;
            let mut c = Command::new(&plan.bwrap);
            c.args(plan.argv(cmd.program, &cmd.args, &binds));
            open = Some(binds);
            c
        }
        None => {
            let mut c = Command::new(cmd.program);
            c.args(&cmd.args);
            c
        }
    };
    command
        .current_dir(cmd.cwd)
        .env_clear()
        .envs(scrubbed_env())
        .envs(cmd.env.iter().cloned())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(user) = user {
        // The daemon is root: the sandbox starts as the unprivileged job user (supplementary groups
        // dropped), so bubblewrap holds no privilege of the daemon's to begin with.
        command.uid(user.uid).gid(user.gid);
    }
    let cgroup_procs = cmd.cgroup_procs;
    // SAFETY: setsid(2), write(2) and fcntl(2) are async-signal-safe and touch no memory of the parent; the
    // descriptors are the bind sources held open in `open` and the job's cgroup.procs, held open by the
    // runner, until after the spawn.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Into the job's cgroup before anything runs. A refusal is seen by the runner (the process is
            // not in the cgroup), which then counts the process tree instead.
            if let Some(fd) = cgroup_procs {
                libc::write(fd, b"0".as_ptr().cast(), 1);
            }
            for fd in &inherit {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn();
    drop(open);
    child
}

/// Sends `signal` to every process of the group; false when the group is gone.
pub fn signal_group(pgid: i32, signal: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) with a negative pid addresses the process group; it has no memory effects.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// Asks the group to stop: SIGTERM to each member except the sandbox's own processes. Bubblewrap dies
/// at SIGTERM and its PID namespace goes with it at once, which would turn the grace period into an
/// immediate kill; the agent gets its SIGTERM directly instead, and the sandbox ends when it exits
/// (or at the SIGKILL after the grace). False when the group is gone.
pub fn terminate_signal(pgid: i32) -> bool {
    let members = group_members(pgid);
    for pid in &members {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim_end() != "bwrap" {
            // SAFETY: kill(2) on a member of the group we created; no memory effects.
            unsafe { libc::kill(*pid, libc::SIGTERM) };
        }
    }
    !members.is_empty()
}

/// TERM the group, wait up to `grace` for it to go, then KILL. Returns true if SIGKILL was needed.
pub async fn terminate_group(pgid: i32, grace: std::time::Duration) -> bool {
    if pgid <= 1 || !terminate_signal(pgid) {
        return false;
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if !group_alive(pgid) {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    signal_group(pgid, libc::SIGKILL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procs::{boot_id, is_recorded_group, start_ticks};

    #[tokio::test]
    async fn group_signals_reach_grandchildren() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = AgentCommand {
            program: Path::new("/bin/sh"),
            args: vec!["-c".into(), "sleep 300 & sleep 300 & wait".into()],
            cwd: dir.path(),
            env: vec![],
            sandbox: None,
            cgroup_procs: None,
        };
        let child = spawn(&cmd).unwrap();
        let pgid = child.id().unwrap() as i32;
        let mut members = Vec::new();
        for _ in 0..100 {
            members = group_members(pgid);
            if members.len() >= 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(members.len() >= 3, "{members:?}");
        terminate_group(pgid, std::time::Duration::from_secs(5)).await;
        let mut child = child;
        let _ = child.wait().await;
        for _ in 0..100 {
            if !group_alive(pgid) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!group_alive(pgid), "no member survives");
    }

    #[tokio::test]
    async fn without_a_cgroup_the_cpu_of_a_descendant_that_left_the_group_counts() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = AgentCommand {
            program: Path::new("/bin/sh"),
            args: vec![
                "-c".into(),
                "setsid sh -c 'while :; do :; done' & echo $!; wait".into(),
            ],
            cwd: dir.path(),
            env: vec![],
            sandbox: None,
            cgroup_procs: None,
        };
        let mut child = spawn(&cmd).unwrap();
        let pgid = child.id().unwrap() as i32;
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
            .await
            .unwrap();
        let busy: i32 = line.trim().parse().unwrap();
        let mut ticks = 0;
        for _ in 0..200 {
            ticks = crate::procs::tree_cpu_ticks(pgid);
            if ticks >= 30 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The busy loop is in a session (and group) of its own: only the tree finds it.
        let in_group = group_members(pgid).contains(&busy);
        // SAFETY: kill(2) on the child this test started; no memory effects.
        unsafe { libc::kill(busy, libc::SIGKILL) };
        let _ = child.kill().await;
        assert!(!in_group);
        assert!(ticks >= 30, "{ticks} ticks");
    }

    #[tokio::test]
    async fn a_recorded_group_is_only_signalled_while_it_is_still_ours() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = AgentCommand {
            program: Path::new("/bin/sleep"),
            args: vec!["30".into()],
            cwd: dir.path(),
            env: vec![],
            sandbox: None,
            cgroup_procs: None,
        };
        let mut child = spawn(&cmd).unwrap();
        let pid = child.id().unwrap() as i32;
        let start = start_ticks(pid).map(|t| t as i64);
        let boot = boot_id();
        assert!(is_recorded_group(pid, boot.as_deref(), start));
        assert!(
            !is_recorded_group(pid, Some("another-boot"), start),
            "a pgid from another boot is never ours"
        );
        assert!(
            !is_recorded_group(pid, boot.as_deref(), start.map(|s| s + 1)),
            "a reused pid is not ours"
        );
        assert!(!is_recorded_group(1, boot.as_deref(), start));
        child.kill().await.unwrap();
    }

    #[test]
    fn scrubbed_env_drops_daemon_settings() {
        // SAFETY: tests in this binary do not read these variables concurrently.
        unsafe {
            std::env::set_var("TELEVIBE_TELEGRAM__TOKEN", "secret");
            std::env::set_var("NOTIFY_SOCKET", "/x");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "backup-secret");
        }
        let env = scrubbed_env();
        assert!(!env.contains_key("AWS_SECRET_ACCESS_KEY"));
        assert!(!env.contains_key("TELEVIBE_TELEGRAM__TOKEN"));
        assert!(!env.contains_key("NOTIFY_SOCKET"));
        assert!(env.contains_key("PATH"));
    }
}

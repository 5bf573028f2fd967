//! Jobs' cgroups (cgroup v2): each job runs in a cgroup of its own under the daemon's, which counts the CPU
//! of every process the job started (exited children and `setsid` descendants included), caps its memory
//! (`jobs.memory_max`) and kills all of it at once. Under systemd the unit's `Delegate=yes` hands the
//! daemon its cgroup; the daemon moves itself into a `daemon` leaf so its jobs can be given controllers.
//! Where no writable cgroup v2 is found, `Cgroups::detect` says why and the runner counts the process tree.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

/// Where the jobs' cgroups are made, and what they can do there.
#[derive(Debug, Clone)]
pub struct Cgroups {
    /// The daemon's delegated cgroup, parent of every job's.
    base: PathBuf,
    /// Whether the memory controller is enabled for the jobs (`memory.max` works).
    pub memory: bool,
}

/// One job's cgroup; removed when dropped (after its processes are gone).
#[derive(Debug)]
pub struct JobCgroup {
    path: PathBuf,
    /// `cgroup.procs` of the job's cgroup, open for writing: the spawned process writes "0" to it before it
    /// runs anything, so nothing it starts is ever outside (the kernel checks the opener's rights).
    procs: std::fs::File,
}

/// The cgroup v2 mount point, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// This process's cgroup v2 path (the `0::` line of `/proc/self/cgroup`).
fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.to_string())
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// Whether the cgroup at `dir` was delegated to this process: systemd's `trusted.delegate` (or
/// `user.delegate`) attribute, or, for a daemon that is not root, the directory being its user's.
fn delegated(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid(2) has no failure mode and no memory effects.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && std::fs::metadata(dir).is_ok_and(|m| m.uid() == euid) {
        return true;
    }
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    [c"trusted.delegate", c"user.delegate"].iter().any(|name| {
        let mut buf = [0u8; 8];
        // SAFETY: getxattr(2) writes at most `buf.len()` bytes into `buf`; both strings are NUL-terminated.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        n > 0 && &buf[..n as usize] == b"1"
    })
}

fn controllers(dir: &Path, file: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

impl Cgroups {
    /// Finds the daemon's cgroup v2 and makes it ready for jobs, or says why jobs cannot have cgroups here.
    /// When `memory` is wanted and the daemon's cgroup offers the controller, the daemon moves itself into a
    /// `daemon` leaf (a cgroup with processes cannot give controllers to its children) and enables it.
    pub fn detect(memory: bool) -> Result<Cgroups, String> {
        let (mount, base) = Self::locate()?;
        let mut memory_on = controllers(&base, "cgroup.subtree_control").contains(&"memory".into());
        if memory
            && !memory_on
            && controllers(&base, "cgroup.controllers").contains(&"memory".into())
        {
            memory_on = Self::enable_memory(&base, &mount).is_ok();
        }
        Ok(Cgroups {
            base,
            memory: memory_on,
        })
    }

    /// What `detect` would find for this process, changing nothing (for `doctor` while no daemon runs):
    /// the jobs' parent cgroup and whether their memory can be limited there.
    pub fn inspect() -> Result<(PathBuf, bool), String> {
        let (_, base) = Self::place()?;
        let c_path = std::ffi::CString::new(base.as_os_str().as_encoded_bytes())
            .map_err(|e| e.to_string())?;
        // SAFETY: access(2) on a NUL-terminated path; no memory effects.
        if unsafe { libc::access(c_path.as_ptr(), libc::W_OK) } != 0 {
            return Err(format!("{} is not writable here", base.display()));
        }
        let memory = controllers(&base, "cgroup.subtree_control").contains(&"memory".into())
            || controllers(&base, "cgroup.controllers").contains(&"memory".into());
        Ok((base, memory))
    }

    /// The cgroup v2 mount and this process's cgroup in it (the parent of a `daemon` leaf of ours),
    /// checked to be delegated to us: the root cgroup, or one systemd delegated (`Delegate=yes` marks it
    /// with the `trusted.delegate` attribute, or hands it to the unit's user). A cgroup of someone else's
    /// (a login session's scope, a unit without `Delegate=yes`) is never written, even by root.
    fn place() -> Result<(PathBuf, PathBuf), String> {
        let mount = cgroup2_mount().ok_or("no cgroup v2 file system is mounted")?;
        let own = own_cgroup().ok_or("this process is in no cgroup v2")?;
        let rel = own.trim_start_matches('/');
        let base = if rel.is_empty() {
            mount.clone()
        } else {
            mount.join(rel)
        };
        // Leaves of our own making (a restart finds itself in `daemon`): the base is their parent.
        let base = if base.file_name().is_some_and(|n| n == "daemon") && base != mount {
            base.parent().map(Path::to_path_buf).unwrap_or(base)
        } else {
            base
        };
        if !base.join("cpu.stat").is_file() {
            return Err(format!("{} has no cpu.stat", base.display()));
        }
        if base != mount && !delegated(&base) {
            return Err(format!(
                "the daemon's cgroup {} is not delegated to it (under systemd the unit needs Delegate=yes)",
                base.display()
            ));
        }
        Ok((mount, base))
    }

    /// `place`, and a job cgroup can be made there.
    fn locate() -> Result<(PathBuf, PathBuf), String> {
        let (mount, base) = Self::place()?;
        let probe = base.join(format!("televibe-probe-{}", std::process::id()));
        std::fs::create_dir(&probe).map_err(|e| {
            format!(
                "cannot create a cgroup under {}: {e} (under systemd the unit needs Delegate=yes)",
                base.display()
            )
        })?;
        let has_cpu_stat = probe.join("cpu.stat").is_file();
        let _ = std::fs::remove_dir(&probe);
        if !has_cpu_stat {
            return Err(format!("cgroups under {} have no cpu.stat", base.display()));
        }
        Ok((mount, base))
    }

    fn enable_memory(base: &Path, mount: &Path) -> std::io::Result<()> {
        if base != mount {
            // The root cgroup may hold processes and still give controllers; any other may not. The
            // daemon moves into a leaf of its own only where it is alone (a unit's cgroup): a cgroup it
            // shares with others (a terminal's scope) could not give controllers anyway, and is not ours
            // to rearrange.
            let me = std::process::id() as i32;
            if procs_of(base).iter().any(|p| *p != me) {
                return Err(std::io::Error::other(format!(
                    "{} holds other processes",
                    base.display()
                )));
            }
            let leaf = base.join("daemon");
            match std::fs::create_dir(&leaf) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            write(&leaf.join("cgroup.procs"), "0")?;
        }
        write(&base.join("cgroup.subtree_control"), "+memory")
    }

    /// The daemon's cgroup, parent of the jobs'.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Makes the cgroup of job `name` (removing a leftover of the same name first), with `memory_max`
    /// bytes of memory when the controller is on (0: no limit); the whole cgroup is killed when it runs out.
    pub fn create(&self, name: &str, memory_max: u64) -> std::io::Result<JobCgroup> {
        let path = self.base.join(format!("job-{name}"));
        if path.is_dir() {
            kill_and_remove(&path);
        }
        std::fs::create_dir(&path)?;
        if self.memory && memory_max > 0 {
            write(&path.join("memory.max"), &memory_max.to_string())?;
            // Past the limit the job is killed, not swapped out far beyond it.
            let _ = write(&path.join("memory.swap.max"), "0");
            let _ = write(&path.join("memory.oom.group"), "1");
        }
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(path.join("cgroup.procs"))?;
        Ok(JobCgroup { path, procs })
    }

    /// Kills and removes the cgroup of job `name` if an earlier run left it (the job is over).
    pub fn release(&self, name: &str) {
        let path = self.base.join(format!("job-{name}"));
        if path.is_dir() {
            kill_and_remove(&path);
        }
    }
}

fn procs_of(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills every process of the cgroup at `path` (`cgroup.kill`, else SIGKILL each) and removes it. The
/// kernel takes a moment to empty it: until then the removal is retried on a thread of its own, so no
/// async worker ever sleeps here.
fn kill_and_remove(path: &Path) {
    if write(&path.join("cgroup.kill"), "1").is_err() {
        for pid in procs_of(path) {
            // SAFETY: kill(2) on a process of a job's cgroup; no memory effects.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if std::fs::remove_dir(path).is_ok() || !path.exists() {
        return;
    }
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        for _ in 0..250 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            if std::fs::remove_dir(&path).is_ok() || !path.exists() {
                return;
            }
        }
    });
}

impl JobCgroup {
    /// The descriptor a new process writes "0" to, to enter this cgroup before it runs anything.
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// Whether process `pid` is in this cgroup.
    pub fn holds(&self, pid: i32) -> bool {
        procs_of(&self.path).contains(&pid)
    }

    /// Microseconds of CPU used by every process that ever ran in the cgroup.
    pub fn cpu_usec(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(self.path.join("cpu.stat")).ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Whether any process is still in the cgroup.
    pub fn populated(&self) -> bool {
        std::fs::read_to_string(self.path.join("cgroup.events"))
            .map(|t| t.lines().any(|l| l == "populated 1"))
            .unwrap_or_else(|_| !procs_of(&self.path).is_empty())
    }

    /// Times the kernel killed the job for running out of its `memory.max`.
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.path.join("memory.events"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills every process of the job, those that left its process group included.
    pub fn kill(&self) {
        if write(&self.path.join("cgroup.kill"), "1").is_err() {
            for pid in procs_of(&self.path) {
                // SAFETY: kill(2) on a process of this job's cgroup; no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        kill_and_remove(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_cgroup_counts_cpu_of_detached_and_exited_children() {
        let groups = Cgroups::detect(false).expect("the test machine has cgroup v2");
        let cg = groups
            .create(&format!("unit-{}", std::process::id()), 0)
            .unwrap();
        let fd = cg.procs_fd();
        let mut cmd = std::process::Command::new("sh");
        // A detached grandchild burns CPU and exits before the shell does.
        cmd.args([
            "-c",
            "setsid sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done' ; true",
        ]);
        use std::os::unix::process::CommandExt;
        // SAFETY: write(2) is async-signal-safe; the descriptor stays open in `cg` across the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let status = cmd.status().unwrap();
        assert!(status.success());
        assert!(!cg.populated());
        assert!(cg.cpu_usec().unwrap() > 10_000, "{:?}", cg.cpu_usec());
        let path = cg.path.clone();
        drop(cg);
        for _ in 0..250 {
            if !path.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!path.exists());
    }
}

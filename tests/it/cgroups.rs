//! Jobs' cgroups as the daemon finds them: in a cgroup delegated to it (systemd's `trusted.delegate`), each
//! job runs in `job-<id>` below it, which holds everything the job started and goes with the job; in one
//! that is not delegated to it, the daemon writes nothing there, counts each job's process tree, and says so
//! in `get_health` and `doctor`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;
use crate::jobs::{run, session, wait_final, wait_status};

const FAKE_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh");

/// A cgroup of the test's own under the cgroup v2 mount, removed (with what runs in it) when dropped.
struct TestCgroup(PathBuf);

fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next() == Some("cgroup2"))
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .expect("the test machine has cgroup v2")
}

impl TestCgroup {
    fn new(name: &str, delegated: bool) -> TestCgroup {
        let path = cgroup2_mount().join(format!("tv-{name}-{}", std::process::id()));
        std::fs::create_dir(&path).unwrap();
        if delegated {
            // What systemd does for a unit with Delegate=yes.
            let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: setxattr(2) reads the two NUL-terminated strings and one byte of value.
            let rc = unsafe {
                libc::setxattr(
                    p.as_ptr(),
                    c"trusted.delegate".as_ptr(),
                    b"1".as_ptr().cast(),
                    1,
                    0,
                )
            };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        }
        TestCgroup(path)
    }

    /// Makes `cmd` start inside this cgroup.
    fn enter(&self, cmd: &mut Command) {
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(self.0.join("cgroup.procs"))
            .unwrap();
        // SAFETY: write(2) is async-signal-safe; the descriptor lives in the closure until the exec.
        unsafe {
            cmd.pre_exec(move || {
                use std::os::fd::AsRawFd;
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    fn job(&self, id: &str) -> PathBuf {
        self.0.join(format!("job-{id}"))
    }
}

fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        for _ in 0..250 {
            if let Ok(dir) = std::fs::read_dir(&self.0) {
                for e in dir.flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::write(e.path().join("cgroup.kill"), "1");
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn config() -> String {
    format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_delegated_cgroup_each_job_gets_its_own_and_nothing_it_started_outlives_it() {
    let cg = TestCgroup::new("delegated", true);
    let env = Env::new(&config());
    let d = env.start_with(|c| cg.enter(c));
    let mcp = Mcp::connect(&env).await;
    let health = mcp.call("get_health", json!({})).await.unwrap();
    assert_eq!(health["cgroups"]["available"], true, "{health}");
    assert_eq!(
        health["cgroups"]["base"].as_str(),
        Some(cg.0.to_str().unwrap()),
        "{health}"
    );
    session(&env, &mcp).await;

    // A job's processes, its background children included, are all in its cgroup while it runs.
    let id = run(&mcp, "S1", "grandchildren").await;
    wait_status(&mcp, &id, Duration::from_secs(20), |s| s == "running").await;
    eventually(
        Duration::from_secs(10),
        "the agent and its children in the job's cgroup",
        || procs(&cg.job(&id)).len() >= 3,
    );
    assert_eq!(
        procs(&cg.0),
        [d.child.id() as i32],
        "the daemon's own cgroup holds the daemon alone"
    );
    mcp.call("cancel_job", json!({"job_id": id})).await.unwrap();
    wait_final(&mcp, &id, Duration::from_secs(20)).await;
    eventually(Duration::from_secs(10), "the job's cgroup gone", || {
        !cg.job(&id).exists()
    });

    // A job that exits leaving background processes behind: the cgroup ends them with it.
    let id = run(&mcp, "S1", "orphans").await;
    let j = wait_final(&mcp, &id, Duration::from_secs(20)).await;
    assert_eq!(j["status"], "done", "{j}");
    eventually(Duration::from_secs(10), "the orphans' cgroup gone", || {
        !cg.job(&id).exists()
    });
    drop(mcp);
    assert!(d.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_cgroup_not_delegated_to_it_the_daemon_writes_nothing_and_says_so() {
    let cg = TestCgroup::new("foreign", false);
    let env = Env::new(&config());
    let d = env.start_with(|c| cg.enter(c));
    let mcp = Mcp::connect(&env).await;
    let health = mcp.call("get_health", json!({})).await.unwrap();
    assert_eq!(health["cgroups"]["available"], false, "{health}");
    assert!(
        health["cgroups"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not delegated")),
        "{health}"
    );
    let doctor = env.run(&["doctor", "--json"]);
    let doctor = json(&String::from_utf8_lossy(&doctor.stdout));
    let finding = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "cgroups")
        .cloned()
        .unwrap_or_default();
    assert_eq!(finding["status"], "WARN", "{doctor}");
    assert!(
        finding["message"]
            .as_str()
            .is_some_and(|m| m.contains("process tree")),
        "{finding}"
    );

    // Jobs still run (their CPU counted over the process tree); nothing is written in the cgroup.
    session(&env, &mcp).await;
    let id = run(&mcp, "S1", "orphans").await;
    assert_eq!(
        wait_final(&mcp, &id, Duration::from_secs(20)).await["status"],
        "done"
    );
    let made: Vec<_> = std::fs::read_dir(&cg.0)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    assert!(made.is_empty(), "{made:?}");
    drop(mcp);
    assert!(d.stop().success());
}

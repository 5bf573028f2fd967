//! The systemd unit shipped in `deploy/`: `systemd-analyze security` rates it 4.0 or less, and its
//! sandbox still lets bubblewrap build every job's.

use std::process::Command;

use crate::harness::required_tool;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/televibe.service");

/// The highest overall exposure `systemd-analyze security` may give the unit (0 safest, 10 worst).
const MAX_EXPOSURE: f64 = 4.0;

#[test]
fn systemd_analyze_security_rates_the_unit_at_most_4() {
    let analyze = required_tool(
        "systemd-analyze",
        "install the Debian package systemd (scripts/install-deps does)",
    );
    // Offline: the unit file alone, no running systemd needed.
    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager", UNIT])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze security failed: {text}"
    );
    // "→ Overall exposure level for televibe.service: 2.5 OK 🙂"
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for televibe.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in: {text}"));
    assert!(
        exposure <= MAX_EXPOSURE,
        "deploy/televibe.service is rated {exposure}, above {MAX_EXPOSURE}; the settings that count:\n{}",
        text.lines()
            .filter(|l| l.starts_with('✗'))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The settings a better rating would tempt one to change, and that would stop every job.
#[test]
fn the_unit_keeps_what_the_job_sandbox_needs() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let setting = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    let one = |key: &str| -> String {
        let values = setting(key);
        assert_eq!(values.len(), 1, "{key}= once in the unit: {values:?}");
        values[0].clone()
    };
    // bwrap --unshare-user --unshare-pid --unshare-net --unshare-ipc --unshare-uts --disable-userns.
    let namespaces = one("RestrictNamespaces");
    for ns in ["user", "mnt", "pid", "net", "ipc", "uts"] {
        assert!(
            namespaces.split_whitespace().any(|n| n == ns),
            "RestrictNamespaces= must allow {ns}: {namespaces}"
        );
    }
    // Jobs' cgroups: the unit's own cgroup is the daemon's to divide, and writable.
    assert_eq!(one("Delegate"), "yes");
    // A stop signals the daemon alone: it ends its agents itself, so their jobs are cut (and run again at
    // the next start), not failed as agents killed by a signal.
    assert_eq!(one("KillMode"), "mixed");
    assert_ne!(
        one("ProtectControlGroups"),
        "yes",
        "a read-only cgroup tree leaves jobs without cgroups"
    );
    // mount, umount2 and pivot_root.
    let filter = one("SystemCallFilter");
    assert!(
        filter.split_whitespace().any(|g| g == "@mount"),
        "SystemCallFilter= must allow @mount: {filter}"
    );
    // The job's loopback is brought up over rtnetlink.
    let families = one("RestrictAddressFamilies");
    for family in ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"] {
        assert!(
            families.split_whitespace().any(|f| f == family),
            "RestrictAddressFamilies= must allow {family}: {families}"
        );
    }
    // JIT compilers in the agent; /proc/sys writable for --disable-userns; /proc/stat and boot_id.
    for (key, reason) in [
        (
            "MemoryDenyWriteExecute",
            "the agent's JavaScript runtimes need writable and executable memory",
        ),
        (
            "ProtectKernelTunables",
            "bwrap --disable-userns writes /proc/sys/user/max_user_namespaces",
        ),
        (
            "ProcSubset",
            "the daemon reads /proc/stat and /proc/sys/kernel/random/boot_id",
        ),
    ] {
        let values = setting(key);
        assert!(
            values
                .iter()
                .all(|v| v == "no" || v == "false" || v == "all"),
            "{key}={values:?} would break jobs: {reason}"
        );
    }
    assert_eq!(one("CapabilityBoundingSet"), "", "no capability at all");
    assert_eq!(one("User"), "televibe");
    assert!(
        setting("ReadWritePaths")
            .iter()
            .any(|p| p.trim_start_matches('-') == "/projects"),
        "the root stays writable under ProtectSystem=strict"
    );
}

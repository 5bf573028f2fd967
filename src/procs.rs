//! Processes as `/proc` shows them: the members and CPU time of a process group, a process's ancestry,
//! this boot's id and when a process started. Reading only; signals and spawning are `jobs::process`.

/// Whether any process of the group is still alive (zombies excluded).
pub fn group_alive(pgid: i32) -> bool {
    !group_members(pgid).is_empty()
}

/// Pids of the live processes in group `pgid`, from `/proc`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(stat) = read_stat(pid)
            && stat.pgrp == pgid
            && stat.state != 'Z'
        {
            out.push(pid);
        }
    }
    out
}

/// CPU ticks (user + system) used by the job whose process group is `pgid`, counted over its process tree:
/// the group's live members and every live descendant of them (one that left the group with `setsid`
/// included), each with the time of the children it waited for. This is the fallback where jobs get no
/// cgroup: a child that exited unwaited-for, or a descendant re-parented away, is not seen.
pub fn tree_cpu_ticks(pgid: i32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let all: Vec<(i32, Stat)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect();
    let mut inside: std::collections::HashSet<i32> = all
        .iter()
        .filter(|(_, s)| s.pgrp == pgid)
        .map(|(pid, _)| *pid)
        .collect();
    loop {
        let before = inside.len();
        for (pid, s) in &all {
            if inside.contains(&s.ppid) {
                inside.insert(*pid);
            }
        }
        if inside.len() == before {
            break;
        }
    }
    all.iter()
        .filter(|(pid, s)| inside.contains(pid) && s.state != 'Z')
        .map(|(_, s)| s.utime + s.stime + s.cutime + s.cstime)
        .sum()
}

struct Stat {
    state: char,
    ppid: i32,
    pgrp: i32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
    start: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; fields continue after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
        cutime: f.get(13)?.parse().ok()?,
        cstime: f.get(14)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// The process groups of a process and of its ancestors (a child that left its group with `setpgid`
/// still descends from it).
pub fn lineage_groups(pid: i32) -> Vec<i32> {
    let mut groups = Vec::new();
    let mut cur = pid;
    for _ in 0..64 {
        let Some(stat) = read_stat(cur) else { break };
        groups.push(stat.pgrp);
        if stat.ppid <= 1 {
            break;
        }
        cur = stat.ppid;
    }
    groups
}

/// Whether process `pid` is `ancestor` or one of its descendants (by the parent chain in `/proc`).
pub fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut cur = pid;
    for _ in 0..64 {
        if cur == ancestor {
            return true;
        }
        match read_stat(cur) {
            Some(stat) if stat.ppid > 0 => cur = stat.ppid,
            _ => return false,
        }
    }
    false
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// When a process started, in clock ticks since boot.
pub fn start_ticks(pid: i32) -> Option<u64> {
    read_stat(pid).map(|s| s.start)
}

/// Whether the process group recorded for a job is still the one the runner created: same boot, and the
/// leader (if alive) is the same process. Used before signalling a pgid read back from the database.
pub fn is_recorded_group(pgid: i32, boot: Option<&str>, leader_start: Option<i64>) -> bool {
    if pgid <= 1 || boot.is_none() || boot != boot_id().as_deref() {
        return false;
    }
    match (read_stat(pgid), leader_start) {
        (Some(stat), Some(start)) => stat.start as i64 == start,
        // The leader is gone; its group may live on in children, which only it could have made.
        (None, _) => true,
        (Some(_), None) => false,
    }
}

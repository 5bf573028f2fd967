//! The drills' results: one row per spec failure row and degraded mode, written as JSON and markdown.
//!
//! Each drill writes its own row file; every write rebuilds the table from all rows under a file lock, so
//! the table is whole whichever drill finishes last. Rows of a drill that did not run say so.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

/// A spec row: key, component, failure mode, spec detection, spec impact, RTO (text, seconds).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<u64>,
);

/// The spec's rows.
pub const ROWS: &[Row] = &[
    (
        "orchestrator_crash",
        "Orchestrator MCP",
        "Process crash",
        "Supervisor watchdog",
        "All operations blocked",
        "< 30s",
        Some(30),
    ),
    (
        "memory_exhaustion",
        "Orchestrator MCP",
        "Memory exhaustion",
        "OOM killer / metrics",
        "Process killed",
        "< 30s",
        Some(30),
    ),
    (
        "runner_hang",
        "Runner",
        "Process hang",
        "Job heartbeat timeout",
        "Job stuck in \"running\"",
        "< 60s",
        Some(60),
    ),
    (
        "claude_api_failure",
        "Runner",
        "Claude API failure",
        "HTTP error codes",
        "Jobs fail",
        "N/A",
        None,
    ),
    (
        "claude_api_failure_default_retries",
        "Runner",
        "Claude API failure (CLI default retries)",
        "HTTP error codes",
        "Jobs fail",
        "N/A",
        None,
    ),
    (
        "telegram_network_loss",
        "Telegram Bot",
        "Network loss",
        "Connection timeout",
        "No user interaction",
        "< 60s",
        Some(60),
    ),
    (
        "telegram_rate_limited",
        "Telegram Bot",
        "Rate limited",
        "429 response",
        "Messages delayed",
        "Self-healing",
        None,
    ),
    (
        "sqlite_disk_full",
        "SQLite DB",
        "Disk full",
        "Write failure",
        "State updates fail",
        "Manual",
        None,
    ),
    (
        "sqlite_corruption",
        "SQLite DB",
        "Corruption",
        "Integrity check fail",
        "Data loss possible",
        "Manual",
        None,
    ),
    (
        "worktree_creation_failure",
        "Git worktree",
        "Creation failure",
        "Git exit code",
        "Session creation fails",
        "N/A",
        None,
    ),
    (
        "worktree_disk_full",
        "Git worktree",
        "Disk full",
        "Git error",
        "Work cannot be saved",
        "Manual",
        None,
    ),
    (
        "degraded_claude_api_unavailable",
        "Degraded mode",
        "claude_api_unavailable",
        "Circuit breaker open on Claude API",
        "New jobs queued but not started",
        "—",
        None,
    ),
    (
        "degraded_telegram_unavailable",
        "Degraded mode",
        "telegram_unavailable",
        "Connection failures to Telegram API",
        "Operations work via MCP; notifications queued",
        "—",
        None,
    ),
    (
        "degraded_database_read_only",
        "Degraded mode",
        "database_read_only",
        "SQLite write failures",
        "Reads work, writes fail",
        "—",
        None,
    ),
];

/// What one drill measured.
pub struct Measured<'a> {
    pub key: &'a str,
    /// From the failure's onset to the daemon noticing it.
    pub detected_after: Duration,
    /// From detection to service restored (what the row's RTO bounds, together with detection).
    pub recovered_after: Duration,
    /// How it was detected, as observed.
    pub detection: &'a str,
    /// What the user saw (the message where the spec gives one).
    pub user_saw: &'a str,
    /// Results or queued jobs missing afterwards, and results delivered twice.
    pub lost: usize,
    pub duplicated: usize,
    /// The drill's non-default settings that shape the figures.
    pub settings: &'a str,
}

fn dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("drills")
}

/// Records one drill's row and rebuilds `target/drills/drills.{json,md}`.
pub fn record(m: Measured) {
    let spec = ROWS
        .iter()
        .find(|r| r.0 == m.key)
        .unwrap_or_else(|| panic!("{} is not a spec row", m.key));
    let total = m.detected_after + m.recovered_after;
    let row = json!({
        "key": m.key,
        "component": spec.1,
        "failure": spec.2,
        "spec_detection": spec.3,
        "spec_impact": spec.4,
        "rto": spec.5,
        "rto_secs": spec.6,
        "detection": m.detection,
        "user_saw": m.user_saw,
        "detected_after_secs": secs(m.detected_after),
        "recovered_after_secs": secs(m.recovered_after),
        "total_secs": secs(total),
        "within_tenth_of_rto": spec.6.map(|r| total.as_secs_f64() <= r as f64 / 10.0),
        "lost": m.lost,
        "duplicated": m.duplicated,
        "settings": m.settings,
        "measured_at": chrono::Utc::now().to_rfc3339(),
    });
    let dir = dir();
    std::fs::create_dir_all(dir.join("rows")).unwrap();
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    std::fs::write(
        dir.join("rows").join(format!("{}.json", m.key)),
        serde_json::to_vec_pretty(&row).unwrap(),
    )
    .unwrap();
    rebuild(&dir);
    lock.unlock().unwrap();
    eprintln!("drill {}: {row}", m.key);
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

fn rebuild(dir: &std::path::Path) {
    let rows: Vec<Value> = ROWS
        .iter()
        .map(|r| {
            std::fs::read(dir.join("rows").join(format!("{}.json", r.0)))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_else(|| json!({"key": r.0, "component": r.1, "failure": r.2, "rto": r.5, "not_run": true}))
        })
        .collect();
    let mut md = String::from(
        "| Component | Failure | Detected by (observed) | Detected after | Recovered after | Total | Spec RTO | ≤ RTO/10 | Lost / duplicated | User saw | Drill settings |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        if r["not_run"] == true {
            md += &format!(
                "| {} | {} | not run | | | | {} | | | | |\n",
                r["component"].as_str().unwrap_or(""),
                r["failure"].as_str().unwrap_or(""),
                r["rto"].as_str().unwrap_or("")
            );
            continue;
        }
        let goal = match r["within_tenth_of_rto"].as_bool() {
            Some(true) => "yes",
            Some(false) => "no",
            None => "—",
        };
        md += &format!(
            "| {} | {} | {} | {:.2} s | {:.2} s | {:.2} s | {} | {} | {} / {} | {} | {} |\n",
            r["component"].as_str().unwrap_or(""),
            r["failure"].as_str().unwrap_or(""),
            cell(&r["detection"]),
            r["detected_after_secs"].as_f64().unwrap_or(0.0),
            r["recovered_after_secs"].as_f64().unwrap_or(0.0),
            r["total_secs"].as_f64().unwrap_or(0.0),
            r["rto"].as_str().unwrap_or(""),
            goal,
            r["lost"],
            r["duplicated"],
            cell(&r["user_saw"]),
            cell(&r["settings"]),
        );
    }
    write_atomic(&dir.join("drills.md"), md.as_bytes());
    write_atomic(
        &dir.join("drills.json"),
        &serde_json::to_vec_pretty(&json!({"rows": rows})).unwrap(),
    );
}

fn cell(v: &Value) -> String {
    v.as_str()
        .unwrap_or("")
        .replace('|', "\\|")
        .replace('\n', " ")
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

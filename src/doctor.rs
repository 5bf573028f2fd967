//! `televibe doctor`: checks the installation and the state on disk, with or without a running daemon.
//!
//! It reads the database read-only and never changes anything; each finding says what to do.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::layout::Layout;
use crate::mcp::client::DaemonClient;
use crate::store::Store;
use crate::telemetry::Metrics;

/// The findings, printed as they come (text) or gathered for one JSON document (`--json`).
#[derive(Default)]
struct Report {
    failures: usize,
    warnings: usize,
    json: bool,
    checks: Vec<serde_json::Value>,
}

impl Report {
    fn say(&mut self, status: &str, what: &str) {
        if self.json {
            self.checks
                .push(serde_json::json!({"status": status, "message": what}));
        } else {
            println!("{:<5} {what}", if status == "ok" { "ok" } else { status });
        }
    }
    fn ok(&mut self, what: &str) {
        self.say("ok", what);
    }
    fn warn(&mut self, what: &str) {
        self.warnings += 1;
        self.say("WARN", what);
    }
    fn fail(&mut self, what: &str) {
        self.failures += 1;
        self.say("FAIL", what);
    }
}

pub async fn run(config: &Config, json: bool) -> ExitCode {
    let mut r = Report {
        json,
        ..Default::default()
    };
    let layout = Layout::new(&config.root);
    match &config.file {
        Some(f) => r.ok(&format!("configuration valid ({})", f.display())),
        None => r.ok("configuration valid (built-in defaults and environment)"),
    }
    for dir in [
        layout.repos(),
        layout.workspaces(),
        layout.orchestrator(),
        layout.logs(),
    ] {
        if dir.is_dir() {
            r.ok(&format!("{} exists", dir.display()));
        } else {
            r.fail(&format!(
                "{} is missing (the daemon creates it at start; check permissions of {})",
                dir.display(),
                config.root.display()
            ));
        }
    }
    if let Ok(meta) = std::fs::metadata(layout.orchestrator())
        && meta.permissions().mode() & 0o077 != 0
    {
        r.warn(&format!(
            "{} is readable by others (expected 0700): chmod 700 it",
            layout.orchestrator().display()
        ));
    }
    match crate::agent_path::find(&config.raw.agent.command) {
        Some(p) => r.ok(&format!(
            "agent command {} found at {}",
            config.raw.agent.command,
            p.display()
        )),
        None => r.warn(&format!(
            "agent command {:?} not found: install it or set agent.command",
            config.raw.agent.command
        )),
    }
    let sandbox = if config.raw.agent.sandbox == "none" {
        r.warn(&format!(
            "sandbox: {}: agent.sandbox = \"none\", jobs can read and write everything this user can",
            crate::jobs::sandbox::UNCONFINED
        ));
        crate::jobs::sandbox::UNCONFINED.to_string()
    } else {
        match crate::jobs::sandbox::check(crate::agent_path::find("bwrap").as_deref()) {
            Ok(()) => {
                r.ok("sandbox: ok (bubblewrap)");
                "ok".to_string()
            }
            Err(e) => {
                r.fail(&format!(
                    "sandbox: failed: {e}; jobs cannot start (install bubblewrap, or set agent.sandbox = \"none\" to run agents unconfined)"
                ));
                format!("failed: {e}")
            }
        }
    };
    check_daemon(config, &mut r).await;
    check_store(&layout, &mut r).await;
    let code = if r.failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    };
    if r.json {
        let doc = serde_json::json!({
            "ok": r.failures == 0,
            "failures": r.failures,
            "warnings": r.warnings,
            "sandbox": sandbox,
            "checks": r.checks,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return code;
    }
    if r.failures > 0 {
        println!(
            "doctor: {} problem(s), {} warning(s)",
            r.failures, r.warnings
        );
    } else {
        println!("doctor: no problems, {} warning(s)", r.warnings);
    }
    code
}

async fn check_daemon(config: &Config, r: &mut Report) {
    match DaemonClient::connect(&config.socket_path).await {
        Err(_) => r.warn(&format!(
            "daemon not running (no answer on {})",
            config.socket_path.display()
        )),
        Ok(client) => {
            match client.call("get_health", serde_json::json!({})).await {
                Ok(h) => {
                    let checks = &h["readiness"]["checks"];
                    let line = format!(
                        "daemon running: ready={} database={} telegram={} repos={}",
                        h["ready"], checks["database"], checks["telegram"], checks["repos"]
                    );
                    if h["ready"] == true {
                        r.ok(&line)
                    } else {
                        r.fail(&line)
                    }
                }
                Err(e) => r.fail(&format!("daemon answered get_health with an error: {e}")),
            }
            client.close().await;
        }
    }
}

async fn check_store(layout: &Layout, r: &mut Report) {
    let db = layout.state_db();
    if !db.exists() {
        r.warn(&format!(
            "{} does not exist yet (created at the first start)",
            db.display()
        ));
        return;
    }
    let store = match Store::open_read_only(&db, Arc::new(Metrics::new())).await {
        Ok(s) => s,
        Err(e) => {
            r.fail(&format!("cannot open the database: {e}"));
            return;
        }
    };
    match store.integrity_check().await {
        Ok(()) => r.ok("database integrity_check ok"),
        Err(e) => {
            r.fail(&e.to_string());
            return;
        }
    }
    let sessions = match store.sessions(None, false).await {
        Ok(s) => s,
        Err(e) => {
            r.fail(&format!("cannot read sessions: {e}"));
            return;
        }
    };
    let mut known: Vec<PathBuf> = Vec::new();
    for s in &sessions {
        let path = PathBuf::from(&s.worktree_path);
        if !path.is_dir() {
            r.warn(&format!(
                "session {} ({} on {}) has no worktree at {}: close it (close_session with force) and open a new session on the same branch",
                s.id, s.project_id, s.branch, s.worktree_path
            ));
        }
        known.push(path);
    }
    let unknown = unknown_worktrees(&layout.workspaces(), &known);
    for dir in &unknown {
        r.warn(&format!(
            "{} is not the worktree of any open session: inspect it, then remove it (git worktree remove) if nothing in it is needed",
            dir.display()
        ));
    }
    r.ok(&format!(
        "{} open session(s), {} unknown worktree(s)",
        sessions.len(),
        unknown.len()
    ));
    store.close().await;
}

/// Directories `workspaces/<project>/<name>` that no open session owns.
fn unknown_worktrees(workspaces: &Path, known: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(projects) = std::fs::read_dir(workspaces) else {
        return out;
    };
    for p in projects.flatten().filter(|e| e.path().is_dir()) {
        let Ok(entries) = std::fs::read_dir(p.path()) else {
            continue;
        };
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            if !known.iter().any(|k| k == &e.path()) {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

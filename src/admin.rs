//! `televibe admin …`: operator views of the running daemon, through the same socket as MCP clients.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::config::Config;
use crate::mcp::client::DaemonClient;
use crate::supervisor::TreeNode;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// The live supervision tree: name, status, restarts, uptime.
    Tree {
        #[arg(long)]
        json: bool,
    },
    /// The nodes sharing the store: which leads, last heartbeats, running jobs (one node on SQLite).
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// Circuit breaker states; `reset <name>` closes one (audited).
    Breakers {
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: Option<BreakersCommand>,
    },
    /// Jobs, newest first.
    Jobs {
        #[arg(long)]
        json: bool,
        /// Only this session's jobs.
        #[arg(long)]
        session: Option<String>,
        /// Only jobs with this status.
        #[arg(long)]
        status: Option<String>,
    },
    /// One job: `job kill <id>` runs the stuck-job runbook (TERM, grace, KILL, failed "Manual termination").
    Job {
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Sessions (open ones; --all includes closed history).
    Sessions {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        all: bool,
    },
    /// One session: `session recover <S>` brings back a missing worktree on the same branch.
    Session {
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// Free disk space: old logs and backups, `git worktree prune`, worktrees of sessions closed over a week
    /// ago. A dry run unless --apply; works with the daemon stopped.
    Cleanup {
        /// Delete (without it, only list what would go and the bytes it frees).
        #[arg(long)]
        apply: bool,
        #[arg(long)]
        json: bool,
    },
    /// Failure drill: make a supervised actor panic (needs debug.test_hooks = true).
    #[command(hide = true)]
    Panic { name: String },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Stop a stuck job: SIGTERM to its process group, wait the grace period, SIGKILL; mark it failed.
    Kill { id: String },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Re-create a missing worktree at the same path on the same branch (or, when git cannot, close the
    /// session and open a new one on that branch); audited.
    Recover { id: String },
}

#[derive(Debug, Subcommand)]
pub enum BreakersCommand {
    /// Close a breaker by hand: claude_code, telegram_api, git_operations or backup_remote.
    Reset { name: String },
}

pub async fn run(config: &Config, command: AdminCommand) -> ExitCode {
    if let AdminCommand::Cleanup { apply, json } = command {
        return crate::cleanup::run(config, apply, json).await;
    }
    let client = match DaemonClient::connect(&config.socket_path).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("televibe admin: {e}");
            return ExitCode::from(1);
        }
    };
    let (tool, args, json_out) = match &command {
        AdminCommand::Tree { json } => ("get_supervision_tree", json!({}), *json),
        AdminCommand::Nodes { json } => ("list_nodes", json!({}), *json),
        AdminCommand::Breakers {
            json,
            command: None,
        } => ("get_breakers", json!({}), *json),
        AdminCommand::Breakers {
            json,
            command: Some(BreakersCommand::Reset { name }),
        } => ("reset_breaker", json!({"name": name}), *json),
        AdminCommand::Jobs {
            json,
            session,
            status,
        } => (
            "list_jobs",
            json!({"session_id": session, "status": status}),
            *json,
        ),
        AdminCommand::Job {
            json,
            command: JobCommand::Kill { id },
        } => ("kill_job", json!({"job_id": id}), *json),
        AdminCommand::Sessions { json, all } => {
            ("list_sessions", json!({"include_closed": all}), *json)
        }
        AdminCommand::Session {
            json,
            command: SessionCommand::Recover { id },
        } => ("recover_session", json!({"session_id": id}), *json),
        AdminCommand::Panic { name } => ("debug_panic_actor", json!({"name": name}), true),
        AdminCommand::Cleanup { .. } => unreachable!("handled above"),
    };
    let result = client.call(tool, args).await;
    client.close().await;
    match result {
        Err(e) => {
            eprintln!("televibe admin: {e}");
            ExitCode::from(1)
        }
        Ok(body) if json_out => {
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(body) => {
            match command {
                AdminCommand::Tree { .. } => match serde_json::from_value::<TreeNode>(body) {
                    Ok(tree) => print!("{}", render_tree(&tree)),
                    Err(e) => {
                        eprintln!("televibe admin: unexpected answer: {e}");
                        return ExitCode::from(1);
                    }
                },
                AdminCommand::Nodes { .. } => print!("{}", render_nodes(&body)),
                AdminCommand::Jobs { .. } => print!("{}", render_jobs(&body["jobs"])),
                AdminCommand::Job { .. } => print!("{}", render_jobs(&json!([body]))),
                AdminCommand::Sessions { .. } => print!("{}", render_sessions(&body["sessions"])),
                AdminCommand::Session { .. } => {
                    println!("{}", body["message"].as_str().unwrap_or_default());
                    print!("{}", render_sessions(&json!([body["session"]])));
                }
                AdminCommand::Breakers {
                    command: Some(_), ..
                } => print!("{}", render_breakers(&json!([body]))),
                _ => print!("{}", render_breakers(&body["breakers"])),
            }
            ExitCode::SUCCESS
        }
    }
}

/// `2h03m`, `4m05s`, `12s`.
pub fn human_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// The tree as an indented table.
pub fn render_tree(tree: &TreeNode) -> String {
    let mut rows = Vec::new();
    fn walk(node: &TreeNode, prefix: String, rows: &mut Vec<(String, String, u64, String)>) {
        rows.push((
            format!("{prefix}{}", node.name),
            node.status.clone(),
            node.restarts,
            human_duration(node.uptime_secs),
        ));
        for child in &node.children {
            let p = if prefix.is_empty() {
                "├─ ".to_string()
            } else {
                format!("   {prefix}")
            };
            walk(child, p, rows);
        }
    }
    walk(tree, String::new(), &mut rows);
    let width = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(4)
        .max(4)
        + 2;
    let mut out = format!(
        "{:<width$}{:<12}{:>8}  {}\n",
        "NAME", "STATUS", "RESTARTS", "UPTIME"
    );
    for (name, status, restarts, uptime) in rows {
        let pad = width.saturating_sub(name.chars().count());
        out.push_str(&format!(
            "{name}{:pad$}{status:<12}{restarts:>8}  {uptime}\n",
            ""
        ));
    }
    out
}

/// `admin nodes` as a table: one row per node, the leader marked.
fn render_nodes(body: &Value) -> String {
    let mut out = format!(
        "store: {}   this node: {}   leader: {}\n{:<20}{:<10}{:<7}{:>10}  {:>8}  {:>8}  {}\n",
        body["store"].as_str().unwrap_or("?"),
        body["this_node"].as_str().unwrap_or("?"),
        body["leader"].as_str().unwrap_or("none"),
        "NODE",
        "ROLE",
        "STATE",
        "HEARTBEAT",
        "RUNNING",
        "SESSIONS",
        "ROOT"
    );
    for n in body["nodes"].as_array().into_iter().flatten() {
        let age = n["heartbeat_age_secs"].as_f64().unwrap_or(0.0);
        out.push_str(&format!(
            "{:<20}{:<10}{:<7}{:>10}  {:>8}  {:>8}  {}\n",
            n["node_id"].as_str().unwrap_or("?"),
            if n["leader"].as_bool().unwrap_or(false) {
                "leader"
            } else {
                "follower"
            },
            n["state"].as_str().unwrap_or("?"),
            format!("{} ago", human_duration(age as u64)),
            n["running_jobs"].as_i64().unwrap_or(0),
            n["open_sessions"].as_i64().unwrap_or(0),
            n["root"].as_str().unwrap_or(""),
        ));
    }
    out
}

fn render_breakers(body: &Value) -> String {
    let mut out = format!(
        "{:<16}{:<11}{:>9}  {}\n",
        "NAME", "STATE", "FAILURES", "THRESHOLDS"
    );
    for b in body.as_array().into_iter().flatten() {
        let s = |k: &str| {
            b.get(k)
                .map(|v| v.to_string().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        out.push_str(&format!(
            "{:<16}{:<11}{:>9}  fail {} / succeed {} / open {} s / probes {}\n",
            s("name"),
            s("state"),
            s("consecutive_failures"),
            s("failure_threshold"),
            s("success_threshold"),
            s("timeout_seconds"),
            s("half_open_requests")
        ));
    }
    out
}

fn render_sessions(body: &Value) -> String {
    let mut out = format!(
        "{:<7}{:<16}{:<28}{:<9}{:<22}{}\n",
        "ID", "PROJECT", "BRANCH", "STATE", "LAST ACTIVITY", "WORKTREE"
    );
    for s in body.as_array().into_iter().flatten() {
        let f = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let mut worktree = f("worktree_path");
        if s.get("worktree_missing").and_then(Value::as_bool) == Some(true) {
            worktree.push_str(" (missing)");
        }
        let activity: String = f("last_activity_at").chars().take(19).collect();
        out.push_str(&format!(
            "{:<7}{:<16}{:<28}{:<9}{:<22}{}\n",
            f("id"),
            f("project_id"),
            f("branch"),
            f("state"),
            activity.replace('T', " "),
            worktree
        ));
    }
    out
}

fn render_jobs(body: &Value) -> String {
    let mut out = format!(
        "{:<10}{:<8}{:<18}{:<21}{:<22}{}\n",
        "JOB", "SESSION", "STATUS", "ERROR TYPE", "QUEUED", "INSTRUCTION"
    );
    for j in body.as_array().into_iter().flatten() {
        let f = |k: &str| j.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let queued: String = f("queued_at").chars().take(19).collect();
        let instruction: String = f("instruction")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(50)
            .collect();
        out.push_str(&format!(
            "{:<10}{:<8}{:<18}{:<21}{:<22}{}\n",
            f("id").chars().take(8).collect::<String>(),
            f("session_id"),
            f("status"),
            f("error_type"),
            queued.replace('T', " "),
            instruction
        ));
    }
    out
}

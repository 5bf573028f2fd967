//! `televibe backup now|list|verify|restore`: the operator's side of backups.
//!
//! `now` asks the running daemon (its `backup_now` tool) and works on the database file itself when the
//! daemon is stopped; `restore` works only while the daemon is stopped. "Running" means the control socket
//! accepts a connection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::backup::{self, Runner};
use crate::breaker::Breakers;
use crate::config::Config;
use crate::layout::Layout;
use crate::mcp::client::DaemonClient;
use crate::store::backup::{Contents, check_file, newer_in_file};
use crate::store::{self, Store};
use crate::telemetry::Metrics;

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a verified backup now (through the running daemon, or on the database when it is stopped).
    Now {
        #[arg(long)]
        json: bool,
    },
    /// Backups: time, size, verified, local and/or remote.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Decompress a backup to a temporary file, check its integrity and count its rows.
    Verify {
        /// A path, a file name in orchestrator/backups, or `latest`.
        file: String,
        #[arg(long)]
        json: bool,
    },
    /// Replace state.db with a backup (daemon stopped); the old file is kept as state.db.corrupted.
    Restore {
        /// A path, a file name in orchestrator/backups, `latest`, or from `backup.remote`:
        /// `remote:latest` or `remote:<file name>` (also a plain file name that only the remote holds).
        file: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, command: BackupCommand) -> ExitCode {
    if config.store.url.is_some() {
        eprintln!("televibe backup: {}", store::OPERATOR_BACKUPS);
        return ExitCode::from(1);
    }
    let result = match command {
        BackupCommand::Now { json } => now(config, json).await,
        BackupCommand::List { json } => list(config, json).await,
        BackupCommand::Verify { file, json } => verify(config, &file, json).await,
        BackupCommand::Restore { file, json } => restore(config, &file, json).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("televibe backup: {e}");
            ExitCode::from(1)
        }
    }
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// The running daemon's client, or `None` when nothing answers on the socket.
async fn daemon(config: &Config) -> Option<DaemonClient> {
    DaemonClient::connect(&config.socket_path).await.ok()
}

async fn now(config: &Config, json_out: bool) -> Result<(), String> {
    let outcome: Value = if let Some(client) = daemon(config).await {
        let r = client.call("backup_now", json!({})).await;
        client.close().await;
        r.map_err(|e| e.to_string())?
    } else {
        let layout = Layout::new(&config.root);
        // The daemon may be starting (its socket not bound yet): the state lock says for sure.
        let _lock = crate::lock::StateLock::acquire(&layout.orchestrator())?;
        let metrics = Arc::new(Metrics::new());
        // Read-only: a copy of what is there, never a new empty database (or a migrated one) when
        // state.db is missing.
        let store = Store::open_read_only(&layout.state_db(), metrics.clone())
            .await
            .map_err(|e| format!("{e}; nothing to back up"))?;
        let breakers = Arc::new(Breakers::new(&config.breakers, metrics.clone()));
        let runner = Runner {
            store: &store,
            layout: &layout,
            remote: config.backup.remote.as_ref(),
            breakers: &breakers,
            metrics: &metrics,
        };
        let r = runner.run(Utc::now()).await;
        store.close().await;
        serde_json::to_value(r?).map_err(|e| e.to_string())?
    };
    if json_out {
        print_json(&outcome);
    } else {
        println!(
            "backup written and verified: {} ({} bytes)",
            outcome["path"].as_str().unwrap_or(""),
            outcome["bytes"]
        );
        if let Some(r) = outcome.get("remote").filter(|r| !r.is_null()) {
            if r["ok"] == true {
                println!("uploaded to {}", r["detail"].as_str().unwrap_or(""));
            } else {
                println!(
                    "upload FAILED (the local backup is kept): {}",
                    r["detail"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

async fn list(config: &Config, json_out: bool) -> Result<(), String> {
    let layout = Layout::new(&config.root);
    let mut rows: BTreeMap<String, Value> = BTreeMap::new();
    for b in backup::list_local(&layout.backups()) {
        rows.insert(
            b.file.clone(),
            json!({
                "file": b.file,
                "time": b.time,
                "bytes": b.bytes,
                "path": b.path,
                // Only a verified copy ever receives a backup's name (temporary files are named otherwise).
                "verified": true,
                "local": true,
                "remote": false,
            }),
        );
    }
    let remote = config.backup.remote.clone();
    let mut remote_error = None;
    if let Some(r) = &remote {
        match r.list().await {
            Ok(objects) => {
                for (name, bytes) in objects {
                    let row = rows.entry(name.clone()).or_insert_with(|| {
                        json!({
                            "file": name,
                            "time": backup::parse_name(&name),
                            "bytes": bytes,
                            "path": null,
                            "verified": true,
                            "local": false,
                        })
                    });
                    row["remote"] = json!(true);
                }
            }
            Err(e) => remote_error = Some(e),
        }
    }
    let mut backups: Vec<Value> = rows.into_values().collect();
    backups.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    if json_out {
        print_json(&json!({
            "backups": backups,
            "directory": layout.backups(),
            "remote": config.backup.remote_url,
            "remote_error": remote_error,
        }));
        return Ok(());
    }
    println!(
        "{:<34}{:<22}{:>12}  {:<9}WHERE",
        "FILE", "TIME (UTC)", "BYTES", "VERIFIED"
    );
    for b in &backups {
        let place = match (b["local"] == true, b["remote"] == true) {
            (true, true) => "local+remote",
            (true, false) => "local",
            _ => "remote",
        };
        let time: String = b["time"].as_str().unwrap_or("").chars().take(19).collect();
        println!(
            "{:<34}{:<22}{:>12}  {:<9}{}",
            b["file"].as_str().unwrap_or(""),
            time.replace('T', " "),
            b["bytes"].to_string(),
            if b["verified"] == true { "yes" } else { "no" },
            place
        );
    }
    if let Some(e) = remote_error {
        eprintln!("remote listing failed: {e}");
    }
    Ok(())
}

/// A backup named by path, by file name in `backups/`, or `latest` (the newest local backup).
fn resolve(layout: &Layout, file: &str) -> Result<PathBuf, String> {
    if file == "latest" {
        return backup::list_local(&layout.backups())
            .pop()
            .map(|b| b.path)
            .ok_or_else(|| format!("no backup in {}", layout.backups().display()));
    }
    let direct = PathBuf::from(file);
    if direct.is_file() {
        return Ok(direct);
    }
    let named = layout.backups().join(file);
    if named.is_file() {
        return Ok(named);
    }
    Err(format!("no backup file {file}"))
}

/// The backup a restore reads: local as `resolve` finds it, or fetched from `backup.remote`
/// (`remote:latest`, `remote:<name>`, or a backup name only the remote holds) into a temporary directory
/// under `backups/` (returned with it, removed when dropped).
async fn resolve_for_restore(
    config: &Config,
    layout: &Layout,
    file: &str,
) -> Result<(PathBuf, Option<tempfile::TempDir>), String> {
    let wanted = file.strip_prefix("remote:");
    let local = match wanted {
        Some(_) => Err(String::new()),
        None => resolve(layout, file),
    };
    let name = match (local, wanted) {
        (Ok(path), _) => return Ok((path, None)),
        (Err(e), None) if config.backup.remote.is_none() || backup::parse_name(file).is_none() => {
            return Err(e);
        }
        (Err(_), None) => file.to_string(),
        (Err(_), Some(n)) => n.to_string(),
    };
    let remote = config
        .backup
        .remote
        .as_ref()
        .ok_or("no backup.remote is configured")?;
    let name = if name == "latest" {
        remote
            .list()
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .max()
            .ok_or_else(|| format!("no backup at {}", config.backup.remote_url))?
    } else {
        name
    };
    std::fs::create_dir_all(layout.backups())
        .map_err(|e| format!("cannot create {}: {e}", layout.backups().display()))?;
    let dir = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(layout.backups())
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let dest = dir.path().join(&name);
    remote.download(&name, &dest).await?;
    Ok((dest, Some(dir)))
}

/// The time the backup was taken: from its name, else the file's modification time.
fn backup_time(path: &Path) -> Option<DateTime<Utc>> {
    path.file_name()
        .and_then(|n| backup::parse_name(&n.to_string_lossy()))
        .or_else(|| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .map(DateTime::<Utc>::from)
        })
}

/// Decompresses into a temporary directory next to `near` and checks the result.
async fn unpack_and_check(
    src: &Path,
    near: &Path,
) -> Result<(tempfile::TempDir, PathBuf, Contents), String> {
    std::fs::create_dir_all(near).map_err(|e| format!("cannot create {}: {e}", near.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".restore-")
        .tempdir_in(near)
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let db = tmp.path().join("state.db");
    let (s, d) = (src.to_path_buf(), db.clone());
    tokio::task::spawn_blocking(move || backup::decompress(&s, &d))
        .await
        .map_err(|e| e.to_string())??;
    let contents = check_file(&db)
        .await
        .map_err(|e| format!("{} is not a sound database: {e}", src.display()))?;
    Ok((tmp, db, contents))
}

async fn verify(config: &Config, file: &str, json_out: bool) -> Result<(), String> {
    let layout = Layout::new(&config.root);
    let path = resolve(&layout, file)?;
    let (_tmp, _db, contents) = unpack_and_check(&path, &std::env::temp_dir()).await?;
    if json_out {
        print_json(&json!({
            "file": path,
            "time": backup_time(&path),
            "ok": true,
            "integrity": "ok",
            "rows": contents.rows,
            "open_sessions": contents.open_sessions,
        }));
    } else {
        println!("{}: integrity ok", path.display());
        print_rows(&contents);
    }
    Ok(())
}

fn print_rows(c: &Contents) {
    for (table, n) in &c.rows {
        println!("  {table:<16}{n:>8}");
    }
    println!("  {:<16}{:>8}", "open sessions", c.open_sessions);
}

/// Failure drills of a restore: with `debug.test_hooks`, `debug.stop_at = "<step>"` makes the restore say
/// `stopped at <step>` on stderr and wait there forever, for a test to kill it at that very step.
fn drill_stop(config: &Config) -> impl Fn(&str) + use<> {
    let stop_at = config.debug.stop_at.clone();
    move |step: &str| {
        if stop_at.as_deref() == Some(step) {
            eprintln!("stopped at {step}");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
}

async fn restore(config: &Config, file: &str, json_out: bool) -> Result<(), String> {
    if let Some(client) = daemon(config).await {
        client.close().await;
        return Err(format!(
            "the daemon is running (its socket {} answers); stop it first (systemctl stop televibe), \
             then run this again",
            config.socket_path.display()
        ));
    }
    let layout = Layout::new(&config.root);
    // A new machine restoring from the remote has no root yet.
    layout
        .create()
        .map_err(|e| format!("cannot prepare root {}: {e}", config.root.display()))?;
    // Held until the restore is done: a daemon starting meanwhile waits for nothing and fails to start
    // rather than opening a file that is being replaced.
    let _lock = crate::lock::StateLock::acquire(&layout.orchestrator())?;
    let (src, fetched) = resolve_for_restore(config, &layout, file).await?;
    let taken_at = backup_time(&src);
    // Verify before: the backup is decompressed next to state.db and checked; nothing is touched yet.
    let (tmp, unpacked, recovered) = unpack_and_check(&src, &layout.orchestrator()).await?;
    // A backup fetched from the remote and found sound joins the local ones under its own name.
    // (`fetched`, the temporary directory, lives to the end of the restore.)
    let src = match &fetched {
        Some(_) => {
            let kept = layout.backups().join(src.file_name().unwrap_or_default());
            if !kept.exists() && std::fs::rename(&src, &kept).is_ok() {
                kept
            } else {
                src
            }
        }
        None => src,
    };
    let db = layout.state_db();
    let lost = match (db.exists(), taken_at) {
        (true, Some(t)) => newer_in_file(&db, t).await,
        _ => None,
    };
    // Results delivered after the backup was taken are marked delivered in the restored file, from the
    // previous one when it can be read: the notifier sends nothing twice.
    let at = drill_stop(config);
    at("staged");
    let carried = if db.exists() {
        store::file::carry_delivered(&unpacked, &db).await.ok()
    } else {
        None
    };
    at("carried");
    // A job running in the backup may have finished since: it is not run again after the restore.
    store::file::hold_running_jobs(&unpacked).await?;
    // Staged beside state.db, checked and fsynced, then renamed over it: there is never a moment without
    // a usable state.db (a crash before the rename leaves the previous one, after it the restored one).
    let kept_as = store::file::install(&unpacked, &db, &at).await?;
    drop(tmp);
    // Verify after: the installed file is read again from its final place.
    let installed = check_file(&db)
        .await
        .map_err(|e| format!("the restored {} failed its check: {e}", db.display()))?;
    if installed != recovered {
        return Err(format!(
            "the restored {} does not hold what the backup held",
            db.display()
        ));
    }
    let rows = |t: &str| recovered.rows.get(t).copied().unwrap_or(0);
    if json_out {
        print_json(&json!({
            "restored_from": src,
            "backup_time": taken_at,
            "state_db": db,
            "kept_as": kept_as,
            "recovered": {
                "projects": rows("projects"),
                "open_sessions": recovered.open_sessions,
                "sessions": rows("sessions"),
                "jobs": rows("jobs"),
                "approvals": rows("approvals"),
                "rows": recovered.rows,
            },
            "lost": lost,
            "lost_known": lost.is_some(),
            "already_delivered": carried,
        }));
        return Ok(());
    }
    println!("restored {} from {}", db.display(), src.display());
    if let Some(k) = &kept_as {
        println!("the previous file is kept as {}", k.display());
    }
    println!(
        "recovered: {} projects, {} open sessions ({} in all), {} jobs, {} approvals",
        rows("projects"),
        recovered.open_sessions,
        rows("sessions"),
        rows("jobs"),
        rows("approvals")
    );
    let when = taken_at
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "unknown".into());
    match (&lost, &kept_as) {
        (Some(l), _) => println!(
            "lost (newer than the backup, {when}): {} projects, {} sessions, {} jobs, {} approvals",
            l.projects, l.sessions, l.jobs, l.approvals
        ),
        (None, Some(_)) => println!(
            "lost: unknown (the previous file could not be read); everything after {when} is missing"
        ),
        (None, None) => println!("there was no previous state.db"),
    }
    match carried {
        Some(n) => println!(
            "{n} results and notices delivered after the backup are marked delivered (not sent again)"
        ),
        None => println!(
            "results delivered after the backup cannot be told from the previous file: they may be sent once more"
        ),
    }
    println!(
        "start the daemon again and check the sessions and jobs (televibe admin sessions, jobs)"
    );
    Ok(())
}

//! The command line: `serve`, `mcp`, `admin …`, `backup …`, `doctor`, `reconstruct`, `config check`. Each subcommand is a library function.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::admin::AdminCommand;
use crate::backup_cmd::BackupCommand;
use crate::config::{Config, ConfigSource};

#[derive(Debug, Parser)]
#[command(
    name = "televibe",
    version,
    about = "Drive coding agents from a phone: supervised daemon, Telegram, MCP"
)]
pub struct Cli {
    /// Configuration file (default: ./config.toml when present, else built-in defaults).
    #[arg(long, global = true, env = "TELEVIBE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve,
    /// Bridge MCP over stdio to the running daemon (for Claude Desktop, Claude Code, any MCP client).
    Mcp {
        /// A job's approval connection: the job id (its secret comes in TELEVIBE_JOB_TOKEN).
        #[arg(long)]
        job: Option<String>,
        /// The daemon's socket (skips reading the configuration).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Check the installation and the state on disk; each finding with its fix (exit 0 ok, 1 warnings, 2 failures).
    Doctor {
        /// One JSON document: ok, failures, warnings, sandbox, checks.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a lost or unusable state.db from the repositories and session worktrees on disk (the daemon
    /// must be stopped; job history is lost). A readable database is kept unless --force.
    Reconstruct {
        /// Replace a readable database too (it is kept as state.db.corrupted, .corrupted.1, …).
        #[arg(long)]
        force: bool,
        /// One JSON document with the counts.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and operate the running daemon.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Backups of the state database: now, list, verify, restore.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Inside a job's sandbox: run PROGRAM with HTTP(S)_PROXY set to a loopback relay that carries each
    /// connection to the daemon's egress socket (exits with PROGRAM's code).
    #[command(hide = true)]
    SandboxRelay {
        /// The egress proxy's Unix socket.
        #[arg(long)]
        socket: PathBuf,
        /// The relay's port on the sandbox's 127.0.0.1 (0: any free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Also point the default agent's model API variable at the relay (the model route).
        #[arg(long)]
        model: bool,
        /// Point this variable at the relay as the model API's base URL (the job's agent names it).
        #[arg(long, value_name = "VAR")]
        model_env: Option<String>,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true)]
        program: Vec<OsString>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it with secrets masked (exit 0 valid, 1 invalid).
    Check,
}

async fn bridge(socket: PathBuf, job: Option<&str>) -> ExitCode {
    crate::logging::init_client();
    let preamble = match job {
        None => None,
        Some(id) => match std::env::var("TELEVIBE_JOB_TOKEN") {
            Ok(token) if !token.is_empty() => Some(crate::mcp::bridge::job_preamble(id, &token)),
            _ => {
                eprintln!("televibe mcp --job: TELEVIBE_JOB_TOKEN is not set");
                return ExitCode::from(1);
            }
        },
    };
    match crate::mcp::bridge::run_stdio(socket, preamble).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("televibe mcp: {e}");
            ExitCode::from(1)
        }
    }
}

fn load(cli: &Cli) -> Result<Config, ExitCode> {
    ConfigSource {
        explicit: cli.config.clone(),
    }
    .load()
    .map_err(|e| {
        eprintln!("televibe: {e}");
        ExitCode::from(1)
    })
}

/// Lets a closed stdout end the process quietly, as it does for other command-line tools
/// (`televibe admin jobs | head`). The Rust runtime ignores SIGPIPE, which turns a reader that went away
/// into a panic on the next print; the daemon and the stdio bridge keep ignoring it, since they handle
/// write errors themselves and must not die because one peer left.
fn quiet_on_closed_stdout(command: &Command) {
    if matches!(
        command,
        Command::Serve | Command::Mcp { .. } | Command::SandboxRelay { .. }
    ) {
        return;
    }
    // SAFETY: called at start, before any thread exists; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    quiet_on_closed_stdout(&cli.command);
    if let Command::SandboxRelay {
        socket,
        port,
        model,
        model_env,
        program,
    } = &cli.command
    {
        let default = || {
            crate::agents::default_driver()
                .model_api()
                .base_url_env
                .to_string()
        };
        let model = model_env.clone().or_else(|| model.then(default));
        return crate::egress::relay::run(socket, *port, model.as_deref(), program);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("televibe: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        if let Command::Mcp {
            job,
            socket: Some(socket),
        } = &cli.command
        {
            return bridge(socket.clone(), job.as_deref()).await;
        }
        let config = match load(&cli) {
            Ok(c) => c,
            Err(code) => return code,
        };
        match cli.command {
            Command::Serve => match crate::daemon::serve(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("televibe: {e}");
                    ExitCode::from(e.exit_code())
                }
            },
            Command::Mcp { job, .. } => bridge(config.socket_path.clone(), job.as_deref()).await,
            Command::Doctor { json } => {
                crate::logging::init_client();
                crate::doctor::run(&config, json).await
            }
            Command::Reconstruct { force, json } => {
                crate::logging::init_client();
                crate::reconstruct::run(&config, force, json).await
            }
            Command::Admin { command } => {
                crate::logging::init_client();
                crate::admin::run(&config, command).await
            }
            Command::Backup { command } => {
                crate::logging::init_client();
                crate::backup_cmd::run(&config, command).await
            }
            // Run above, without the configuration or this runtime.
            Command::SandboxRelay { .. } => ExitCode::from(125),
            Command::Config {
                command: ConfigCommand::Check,
            } => {
                print!("{}", config.to_masked_toml());
                match &config.file {
                    Some(f) => eprintln!("configuration valid ({})", f.display()),
                    None => eprintln!("configuration valid (built-in defaults and environment)"),
                }
                ExitCode::SUCCESS
            }
        }
    })
}

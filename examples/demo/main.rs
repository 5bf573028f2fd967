//! Demo: the real daemon driven from a simulated phone, a job approved with a tap; no token, network or login.

// `cargo run --release --example demo` (or without `--release`); `TVDEMO_SCRIPTED=1` uses the scripted
// agent even when the Claude Code CLI is installed.

#[path = "../../tests/it/fake_model.rs"]
#[allow(dead_code)]
mod fake_model;
#[path = "../../tests/it/fake_telegram.rs"]
#[allow(dead_code)]
mod fake_telegram;

mod agent;
mod daemon;
mod phone;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use agent::Agent;
use daemon::Daemon;
use fake_model::FakeModel;
use fake_telegram::TOKEN;
use phone::Phone;

/// The Telegram user the daemon serves.
const USER: i64 = 4242;
/// The repository the user registers.
const PROJECT: &str = "greeter";
/// Families of `/metrics` the demo shows.
const METRICS: &[&str] = &[
    "televibe_jobs_total",
    "televibe_jobs_active",
    "televibe_approvals_total",
    "televibe_approvals_pending",
    "televibe_circuit_breaker_state",
    "televibe_sessions_active",
    "televibe_sessions_total",
    "televibe_health_check",
];

fn main() -> ExitCode {
    if std::env::var(agent::ROLE_VAR).as_deref() == Ok("agent") {
        agent::run();
        return ExitCode::SUCCESS;
    }
    // `televibe doctor` asks the configured agent (this program, for the scripted agent) for its version,
    // without the agent's environment: answer it, and never start a demo from inside a demo.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version") {
        println!("televibe-demo scripted agent {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if !args.is_empty() || std::env::var_os(daemon::INSIDE_VAR).is_some() {
        eprintln!("usage: cargo run --release --example demo (no arguments)");
        return ExitCode::from(2);
    }
    let outcome = daemon::binary().and_then(|bin| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()?
            .block_on(demo(&bin))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("\n❌ The demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets everything up, plays the conversation, shows tree and metrics, stops and cleans up.
async fn demo(bin: &std::path::Path) -> Result<()> {
    let started = Instant::now();
    let agent = Agent::choose()?;
    let model = match agent {
        Agent::Claude(..) => Some(FakeModel::start(agent::model_reply).await),
        Agent::Scripted(..) => None,
    };
    let mut phone = Phone::start(USER).await;
    let mut daemon = Daemon::new(bin)?;
    daemon.make_repo(PROJECT)?;
    let sandbox = configure(&daemon, &agent, model.as_ref(), &phone)?;
    println!("═══ TeleVibeCode demo: no Telegram token, no network, no Claude account ═══");
    println!(
        "daemon:   {} (run through a private link) on the temporary root {}",
        bin.display(),
        daemon.root().display()
    );
    println!(
        "telegram: the project's fake Bot API at {} (user {USER} allowed)",
        phone.tg.url()
    );
    println!("agent:    {}", agent.describe());
    println!("sandbox:  {sandbox}");
    let shown = match daemon.start(TOKEN).await {
        Ok(()) => play(&mut phone, &daemon).await,
        Err(e) => Err(e),
    };
    if shown.is_err() {
        println!();
        for line in daemon.log_tail(15) {
            println!("daemon log: {line}");
        }
    }
    let stopped = daemon.stop().await;
    drop(phone);
    let removed = daemon.remove();
    let job = shown?;
    stopped.context("stopping the daemon")?;
    removed.context("removing the temporary root")?;
    println!(
        "\n✅ Job {job} is done after the approval tapped on the phone; the daemon stopped cleanly and its \
         temporary root is gone ({:.1} s).",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The config: the fake Bot API, the agent, and the sandbox `televibe doctor` finds usable here.
fn configure(
    daemon: &Daemon,
    agent: &Agent,
    model: Option<&FakeModel>,
    phone: &Phone,
) -> Result<String> {
    let model_url = model.map(FakeModel::url);
    let write = |sandbox: &str| {
        daemon.write_config(&format!(
            "[telegram]\napi_url = \"{}\"\nallowed_users = [{USER}]\n{}",
            phone.tg.url(),
            agent.config(model_url.as_deref(), &daemon.home(), sandbox)
        ))
    };
    write("bwrap")?;
    let check = daemon.sandbox_check()?;
    if check == "ok" {
        return Ok("bubblewrap (every job in its own sandbox)".into());
    }
    write("none")?;
    Ok(format!(
        "none: doctor says {check:?}, so this demo runs its agent unconfined"
    ))
}

/// The conversation and the chat as the phone shows it (so far, when it failed), then the tree and the
/// metrics; answers the job's short id.
async fn play(phone: &mut Phone, daemon: &Daemon) -> Result<String> {
    let job = conversation(phone).await;
    let title = if job.is_ok() { "" } else { " so far" };
    println!("\n─── The phone{title} ───");
    println!(
        "(bot messages where they sit in the chat, each in its final state; the job's progress"
    );
    println!(
        " message and the approval request were edited as the job went on, its result came as a new one)"
    );
    print!("{}", phone.transcript());
    let job = job?;
    println!("\n─── Supervision tree: televibe admin tree ───");
    print!("{}", daemon.admin(&["tree"])?);
    println!("\n─── GET /metrics (excerpt) ───");
    print!("{}", metrics(daemon).await?);
    Ok(job)
}

/// Register, open a session, instruct, approve, see the result, ask for the diff.
async fn conversation(phone: &mut Phone) -> Result<String> {
    phone.say("/start", "TeleVibeCode").await?;
    phone
        .say(&format!("/register {PROJECT}"), "Registered")
        .await?;
    phone.say(&format!("/new {PROJECT}"), "Session S1").await?;
    let asked = phone
        .say_until(agent::INSTRUCTION, "an approval request", |m| {
            m.visible.contains("Approval needed") || final_tracker(&m.visible)
        })
        .await?;
    if final_tracker(&asked.visible) {
        bail!("the job ended without asking:\n{}", asked.visible);
    }
    phone.tap(&asked, "Approve").await?;
    let tracker = phone
        .wait("the job's tracker in a final state", |m| {
            final_tracker(&m.visible)
        })
        .await?;
    if !tracker.visible.contains("status: done") {
        bail!("the job did not succeed:\n{}", tracker.visible);
    }
    phone
        .wait("the approval message showing the decision", |m| {
            m.message_id == asked.message_id && m.visible.contains("approved")
        })
        .await?;
    phone.say("/diff", "Changes of S1").await?;
    let id = tracker.visible.split("Job ").nth(1).unwrap_or("");
    Ok(id.chars().take(8).collect())
}

fn final_tracker(text: &str) -> bool {
    text.contains("Job ")
        && ["status: done", "status: failed", "status: canceled"]
            .iter()
            .any(|s| text.contains(s))
}

/// The chosen families of `/metrics`, once the finished job is counted.
async fn metrics(daemon: &Daemon) -> Result<String> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let body = daemon.get("/metrics")?;
        let done = body
            .lines()
            .any(|l| l.starts_with("televibe_jobs_total{") && l.contains("status=\"done\""));
        if done {
            let shown: Vec<&str> = body.lines().filter(|l| wanted(l)).collect();
            return Ok(format!("{}\n", shown.join("\n")));
        }
        if Instant::now() > end {
            bail!("/metrics does not count the job as done");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sample of one of the shown families, or its `# HELP` line (which says what the values mean).
fn wanted(line: &str) -> bool {
    let name = match line.strip_prefix("# HELP ") {
        Some(help) => help.split(' ').next().unwrap_or(""),
        None if line.starts_with('#') => return false,
        None => line.split(['{', ' ']).next().unwrap_or(""),
    };
    METRICS
        .iter()
        .any(|m| *m == name || m.strip_suffix("_total") == Some(name))
}

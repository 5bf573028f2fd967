//! The benchmark: drives the release binary with the project's own fakes (Telegram Bot API, model API) and
//! prints each figure beside its reference, measured on the same machine in the same run.
//!
//! `cargo run --release --example bench -- --json bench.json [--markdown bench.md] [--only a,b]`
//!
//! Cases: `reply` (command reply latency), `say_hi` (the real agent CLI end to end), `codex_say_hi` (the
//! same with the real Codex CLI beside the bare `codex app-server`), `line` (agent stdout
//! line to Telegram call), `spawn` (run_instruction to agent spawned), `mcp` (MCP round trip),
//! `worktree` (create_session on 10k files), `idle` (RSS and CPU with 50 sessions), `store` (start and
//! kill -9 to ready with 100k jobs and 1M events, list_jobs pages), `store_pg` (the same on PostgreSQL),
//! `nodes` (quick jobs and outbox events per second on one node with SQLite, one with PostgreSQL, and two
//! nodes sharing one PostgreSQL), `hang` (hung-job detection overshoot), `load` (50 jobs streaming 20k
//! lines each).

#[path = "../../tests/it/fake_model.rs"]
#[allow(dead_code)]
mod fake_model;
#[path = "../../tests/it/fake_openai.rs"]
#[allow(dead_code)]
mod fake_openai;
#[path = "../../tests/it/fake_telegram.rs"]
#[allow(dead_code)]
mod fake_telegram;
#[path = "../../tests/it/pg.rs"]
#[allow(dead_code)]
mod pg;

mod agent;
mod codex_case;
mod core_cases;
mod daemon;
mod nodes_case;
mod report;
mod tg_cases;

use std::path::PathBuf;

use report::Figure;

const CASES: [&str; 13] = [
    "reply",
    "say_hi",
    "codex_say_hi",
    "line",
    "spawn",
    "mcp",
    "worktree",
    "idle",
    "store",
    "store_pg",
    "nodes",
    "hang",
    "load",
];

fn main() {
    match std::env::var("TVBENCH_AGENT").ok().as_deref() {
        Some("mcp") => return agent::mcp_server(),
        Some(_) => return agent::run(),
        None => {}
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let json = PathBuf::from(value("--json").unwrap_or_else(|| "bench.json".into()));
    let markdown = value("--markdown")
        .map(PathBuf::from)
        .unwrap_or_else(|| json.with_extension("md"));
    let only: Vec<String> = value("--only")
        .map(|o| o.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| CASES.iter().map(|c| c.to_string()).collect());
    if let Some(bad) = only.iter().find(|c| !CASES.contains(&c.as_str())) {
        eprintln!("unknown case {bad:?}; cases: {}", CASES.join(", "));
        std::process::exit(2);
    }
    let bin = daemon::binary();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let mut figures: Vec<Figure> = Vec::new();
    for case in &only {
        eprintln!("==> {case}");
        let got = rt.block_on(async {
            match case.as_str() {
                "reply" => tg_cases::command_reply(&bin).await,
                "say_hi" => tg_cases::say_hi(&bin).await,
                "codex_say_hi" => codex_case::say_hi(&bin).await,
                "line" => tg_cases::line_to_telegram(&bin).await,
                "load" => tg_cases::load(&bin).await,
                "spawn" => core_cases::spawn(&bin).await,
                "mcp" => core_cases::mcp_round_trip(&bin).await,
                "worktree" => core_cases::create_session(&bin).await,
                "idle" => core_cases::idle(&bin).await,
                "store" => core_cases::large_store(&bin).await,
                "store_pg" => core_cases::large_store_pg(&bin).await,
                "nodes" => nodes_case::nodes(&bin).await,
                "hang" => core_cases::hang_overshoot(&bin).await,
                _ => unreachable!("checked above"),
            }
        });
        for f in &got {
            eprintln!("    {}: {} (reference: {})", f.name, f.value, f.reference);
        }
        figures.extend(got);
    }
    report::write(&figures, &json, &markdown);
    println!("{}", report::markdown(&figures));
    eprintln!("wrote {} and {}", json.display(), markdown.display());
}

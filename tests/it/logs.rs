//! The daemon's own log: every line about a job carries that job's trace id from queue to end, logger
//! names are dotted module names, and other crates' lines below warning stay out unless configured.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;
use crate::jobs::{run, session, wait_final};

const FAKE_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh");

/// The JSON lines of `orchestrator.log` (the daemon has stopped, so they are all written).
fn log_lines(env: &Env) -> Vec<Value> {
    let text = std::fs::read_to_string(env.orchestrator().join("logs/orchestrator.log")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `^televibe(\.[a-z_]+)+$`
fn is_own_logger(name: &str) -> bool {
    name.strip_prefix("televibe").is_some_and(|rest| {
        rest.starts_with('.')
            && rest[1..]
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    })
}

/// A crate's module path with dots: `rmcp.service`, `sqlx.query`, `hyper_util.client`.
fn is_crate_logger(name: &str) -> bool {
    name.split('.').all(|p| {
        p.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    })
}

/// Waits for the first pending approval and answers its id.
async fn pending_approval(mcp: &Mcp) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pending = mcp.call("list_pending_approvals", json!({})).await.unwrap();
        if let Some(id) = pending["approvals"][0]["id"].as_str() {
            return id.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no approval asked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_is_one_trace_from_queue_to_end_and_other_crates_stay_quiet() {
    let env = Env::new(&format!(
        "[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n"
    ));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    // One job asks a person (approvals, waiting, the decision), one just runs.
    let asking = run(&mcp, "S1", "ask-approval").await;
    let approval = pending_approval(&mcp).await;
    mcp.call("approve", json!({"approval_id": approval}))
        .await
        .unwrap();
    assert_eq!(
        wait_final(&mcp, &asking, Duration::from_secs(30)).await["status"],
        "done"
    );
    let plain = run(&mcp, "S1", "say hello").await;
    wait_final(&mcp, &plain, Duration::from_secs(30)).await;
    drop(mcp);
    assert!(d.stop().success());

    let lines = log_lines(&env);
    for (job, wanted) in [
        (
            &asking,
            &[
                "Job queued",
                "Job started",
                "Approval needed",
                "Approval decided",
                "Job finished",
            ][..],
        ),
        (&plain, &["Job queued", "Job started", "Job finished"][..]),
    ] {
        let trace = job.replace('-', "");
        let about: Vec<&Value> = lines
            .iter()
            .filter(|l| l["context"]["job_id"] == job.as_str())
            .collect();
        for message in wanted {
            assert!(
                about.iter().any(|l| l["message"] == *message),
                "no {message:?} line with job_id {job}: {about:#?}"
            );
        }
        // Every line with the job's id in its context carries the job's trace id.
        for l in &about {
            assert_eq!(l["trace_id"], trace.as_str(), "{l}");
        }
        // And no line of another job does.
        assert!(
            lines
                .iter()
                .filter(|l| l["trace_id"] == trace.as_str())
                .all(|l| l["context"]["job_id"] == job.as_str()),
            "a line in job {job}'s trace without its id"
        );
    }
    // Span ids tell the lines' spans apart: not one id for the whole trace.
    let spans: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["context"]["job_id"] == asking.as_str())
        .filter_map(|l| l["span_id"].as_str())
        .collect();
    assert!(spans.len() > 1, "{spans:?}");

    for l in &lines {
        let logger = l["logger"].as_str().unwrap();
        if is_own_logger(logger) {
            continue;
        }
        assert!(
            is_crate_logger(logger) && !logger.starts_with("televibe"),
            "malformed logger name: {l}"
        );
        assert!(
            ["warning", "error", "critical"].contains(&l["level"].as_str().unwrap()),
            "another crate's line below warning by default: {l}"
        );
    }
}

/// The default is what keeps them out: with `third_party_level = "info"` the MCP server's own info
/// lines are there.
#[tokio::test(flavor = "multi_thread")]
async fn other_crates_lines_come_back_when_configured() {
    let env = Env::new("[logging]\nthird_party_level = \"info\"\n");
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    mcp.call("list_projects", json!({})).await.unwrap();
    drop(mcp);
    assert!(d.stop().success());
    let lines = log_lines(&env);
    assert!(
        lines.iter().any(|l| {
            let logger = l["logger"].as_str().unwrap();
            l["level"] == "info" && !logger.starts_with("televibe") && is_crate_logger(logger)
        }),
        "no info line of another crate with third_party_level = \"info\""
    );
}

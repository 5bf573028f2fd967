//! MCP clients that need not poll: `wait_job`, `run_instruction` with `wait: true`, progress notifications,
//! and `list_jobs` pages.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, ProgressNotificationParam};
use rmcp::service::{NotificationContext, RoleClient};
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::harness::*;
use crate::jobs::{run, session};

const FAKE_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh");

/// An MCP client that keeps the progress notifications it gets.
#[derive(Clone, Default)]
struct Listener {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for Listener {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_for_jobs_with_progress_and_paging_through_them() {
    let env = Env::new(&format!(
        "[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n"
    ));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;

    // wait: true answers with the ended job.
    let started = Instant::now();
    let done = mcp
        .call(
            "run_instruction",
            json!({"session_id": "S1", "instruction": "say ok", "wait": true}),
        )
        .await
        .unwrap();
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["timed_out"], false, "{done}");
    assert_eq!(done["result_text"], "ok", "{done}");
    assert!(started.elapsed() < Duration::from_secs(20));

    // A wait that times out answers the job as it stands.
    let slow = run(&mcp, "S1", "slow").await;
    let waited = mcp
        .call("wait_job", json!({"job_id": slow, "timeout_secs": 1}))
        .await
        .unwrap();
    assert_eq!(waited["timed_out"], true, "{waited}");
    assert!(
        ["queued", "running"].contains(&waited["status"].as_str().unwrap()),
        "{waited}"
    );
    // ... and one that is waiting when the job ends answers then: a cancel ends it.
    let (waiter, canceller) = tokio::join!(
        mcp.call(
            "wait_job",
            json!({"job_id": &slow[..8], "timeout_secs": 60})
        ),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            mcp.call("cancel_job", json!({"job_id": slow})).await
        }
    );
    canceller.unwrap();
    let waiter = waiter.unwrap();
    assert_eq!(waiter["status"], "canceled", "{waiter}");
    assert_eq!(waiter["timed_out"], false);
    mcp.refused("wait_job", json!({"job_id": "feedbeef00"}), "JOB_NOT_FOUND")
        .await;

    // Progress notifications, when the request carries a progress token.
    let listener = Listener::default();
    let mut listening = bridge(&env);
    let io = (
        listening.stdout.take().unwrap(),
        listening.stdin.take().unwrap(),
    );
    let client = listener.clone().serve(io).await.unwrap();
    let mut p = CallToolRequestParams::new("run_instruction");
    p.arguments = json!({"session_id": "S1", "instruction": "chatty", "wait": true})
        .as_object()
        .cloned();
    let r = client.call_tool(p).await.unwrap();
    let body = r.structured_content.unwrap_or(Value::Null);
    assert_eq!(body["status"], "done", "{body}");
    // The client may handle notifications concurrently: they are put back in the order of their progress.
    let mut notes = listener.progress.lock().unwrap().clone();
    notes.sort_by(|a, b| a.progress.total_cmp(&b.progress));
    // queued, started, 120 tool uses and their results, completed.
    assert!(notes.len() >= 243, "{} notifications", notes.len());
    let counts: Vec<f64> = notes.iter().map(|n| n.progress).collect();
    let expected: Vec<f64> = (1..=notes.len()).map(|n| n as f64).collect();
    assert_eq!(counts, expected, "each event once, counted up");
    // The client library numbers its requests' progress tokens itself.
    let token = &notes[0].progress_token;
    assert!(notes.iter().all(|n| &n.progress_token == token));
    assert!(
        notes
            .last()
            .unwrap()
            .message
            .as_deref()
            .unwrap()
            .starts_with("job.completed"),
        "{:?}",
        notes.last()
    );
    client.cancel().await.unwrap();

    // Without a token, none: a plain JSON-RPC client through the same bridge.
    let mut plain = bridge(&env);
    let mut input = plain.stdin.take().unwrap();
    let mut lines = BufReader::new(plain.stdout.take().unwrap()).lines();
    for line in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
               "capabilities": {}, "clientInfo": {"name": "plain", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "run_instruction",
               "arguments": {"session_id": "S1", "instruction": "chatty", "wait": true}}}),
    ] {
        input
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    loop {
        let line = lines.next_line().await.unwrap().expect("an answer");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["id"] == 2 {
            assert_eq!(v["result"]["structuredContent"]["status"], "done", "{v}");
            break;
        }
        seen.push(v);
    }
    assert!(
        seen.iter().all(|v| v["method"] != "notifications/progress"),
        "{seen:?}"
    );
    drop(input);

    // Pages: newest first, `before` continues after the last one shown.
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut args = json!({"session_id": "S1", "limit": 2});
        if let Some(b) = &before {
            args["before"] = json!(b);
        }
        let page = mcp.call("list_jobs", args).await.unwrap();
        let jobs = page["jobs"].as_array().unwrap();
        seen.extend(jobs.iter().map(|j| j["id"].as_str().unwrap().to_string()));
        match page["next_before"].as_str() {
            Some(b) => before = Some(b.to_string()),
            None => break,
        }
    }
    let all = mcp
        .call("list_jobs", json!({"session_id": "S1"}))
        .await
        .unwrap();
    let all: Vec<String> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all.len(), 4);
    assert_eq!(seen, all, "the pages together are the whole list, in order");
    drop(d);
}

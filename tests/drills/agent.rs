//! Drills on the agent side: a hung agent, and the model API failing (the real Claude Code CLI against the
//! fake model answering 529).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::fake_model::{FakeModel, Reply, after_tool, text_of};
use crate::fake_telegram::FakeTelegram;
use crate::harness::*;
use crate::record::{Measured, record};

/// The phone, a daemon running the real Claude Code CLI against `model` with `sessions` sessions, and an
/// MCP client. The daemon's defaults hold unless `agent_env` (more of the agent's environment, as
/// `KEY = "value", `) or `more` (further sections) say otherwise.
async fn claude_phone(
    model: &FakeModel,
    agent_env: &str,
    more: &str,
    sessions: usize,
) -> (FakeTelegram, Env, Daemon, Mcp) {
    let tg = FakeTelegram::start().await;
    let claude = claude_cli();
    let env = Env::new("");
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    env.write_config(&tg_config(
        &tg,
        &format!(
            "[agent]\ncommand = \"{}\"\n\
             env = {{ ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"sk-test\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", {agent_env}HOME = \"{}\" }}\n{more}",
            claude.display(),
            model.url(),
            home.display()
        ),
    ));
    let d = start(&env);
    phone_sessions(&env, &tg, sessions).await;
    let mcp = Mcp::connect(&env).await;
    (tg, env, d, mcp)
}

#[tokio::test(flavor = "multi_thread")]
async fn runner_hang_is_killed_and_the_queue_goes_on() {
    // The model stalls in the middle of its answer and keeps the connection alive with pings: the agent
    // prints nothing and idles. Default settings (hang_timeout_secs = 60, kill_grace_secs = 30).
    let stalled_at: Arc<std::sync::Mutex<Option<Instant>>> = Default::default();
    let at = stalled_at.clone();
    let model = FakeModel::start(move |req| {
        // A resumed conversation repeats the earlier instruction: the next job's request says "queued".
        let text = text_of(req);
        if text.contains("stall") && !text.contains("queued behind") {
            at.lock().unwrap().get_or_insert_with(Instant::now);
            Reply::StallMidStream {
                text: "Let me think about".into(),
            }
        } else {
            Reply::Text("Next one done.".into())
        }
    })
    .await;
    let (tg, _env, _d, mcp) = claude_phone(&model, "", "", 1).await;
    let hung = run(&mcp, "S1", "stall in the middle").await;
    let running = wait_status(&mcp, &hung, Duration::from_secs(60), &["running"]).await;
    let next = run(&mcp, "S1", "queued behind the stuck job").await;
    let j = wait_final(&mcp, &hung, Duration::from_secs(240)).await;
    let onset = stalled_at
        .lock()
        .unwrap()
        .unwrap_or_else(|| panic!("the model never saw the request: {j}"));
    let detected = onset.elapsed();
    assert_eq!(
        (j["status"].as_str(), j["error_type"].as_str()),
        (Some("failed"), Some("hung")),
        "{j}"
    );
    assert!(
        detected < Duration::from_secs(90),
        "the spec's runner RTO is 60 s: found {detected:?} after the stall"
    );
    let pgid = running["pgid"].as_i64().unwrap() as i32;
    assert!(
        televibe::core::jobs::process::group_members(pgid).is_empty(),
        "the hung agent's processes are gone"
    );
    let t1 = Instant::now();
    let stuck = format!("Job {hung} was terminated after getting stuck");
    until(
        Duration::from_secs(20),
        "the user told in the runbook's words",
        || tg.messages(USER).iter().any(|m| m.visible.contains(&stuck)),
    )
    .await;
    let n = wait_final(&mcp, &next, Duration::from_secs(90)).await;
    assert_eq!(n["status"], "done", "the session's queue goes on: {n}");
    let recovered = t1.elapsed();
    let ids = [hung.clone(), next.clone()];
    all_delivered(&tg, &ids, Duration::from_secs(20)).await;
    let (lost, duplicated) = deliveries(&tg, &ids);
    record(Measured {
        key: "runner_hang",
        detected_after: detected,
        recovered_after: recovered,
        detection: "hang detector: no output and no CPU in the job's cgroup for hang_timeout_secs; SIGTERM, then SIGKILL to the group and the cgroup",
        user_saw: &stuck.replace(&hung, "{job_id}"),
        lost,
        duplicated,
        settings: "defaults (hang_timeout_secs = 60, kill_grace_secs = 30); real Claude Code CLI, the model stalls mid-stream sending pings",
    });
    assert_eq!((lost, duplicated), (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_cpu_bound_command_is_not_hung() {
    // 100 s of CPU and no output, in a detached process that forks a short-lived child per loop: only the
    // job's cgroup sees all of it. Default hang_timeout_secs = 60.
    let model = FakeModel::start(|req| {
        if after_tool(req) {
            Reply::Text("The build finished.".into())
        } else {
            Reply::ToolUse {
                name: "Bash".into(),
                input: json!({
                    "command": "setsid sh -c 'e=$(( $(date +%s) + 100 )); while [ $(date +%s) -lt $e ]; do :; done' & wait; echo built",
                    "description": "a long silent build",
                    "timeout": 300000
                }),
            }
        }
    })
    .await;
    let (_tg, _env, _d, mcp) = claude_phone(&model, "", "", 1).await;
    let id = run(&mcp, "S1", "build it").await;
    let approval = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p = mcp.call("list_pending_approvals", json!({})).await.unwrap();
            if let Some(a) = p["approvals"].as_array().unwrap().first() {
                break a["id"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "the build was asked for");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    mcp.call("approve", json!({"approval_id": approval}))
        .await
        .unwrap();
    let j = wait_final(&mcp, &id, Duration::from_secs(300)).await;
    assert_eq!(
        (j["status"].as_str(), j["result_text"].as_str()),
        (Some("done"), Some("The build finished.")),
        "{j}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_api_failure_opens_the_breaker_and_queues() {
    api_failure_drill(true).await;
}

/// The same drill with the CLI's own retries as production runs them (ten, backing off to about 40 s):
/// each job fails only after about three minutes. Two sessions fail side by side.
#[tokio::test(flavor = "multi_thread")]
async fn claude_api_failure_with_the_clis_default_retries() {
    api_failure_drill(false).await;
}

async fn api_failure_drill(no_retries: bool) {
    let down = Arc::new(AtomicBool::new(true));
    let is_down = down.clone();
    let model = FakeModel::start(move |_| {
        if is_down.load(Ordering::SeqCst) {
            Reply::error(529, "overloaded_error", "Overloaded")
        } else {
            Reply::Text("Back to work.".into())
        }
    })
    .await;
    let retries = if no_retries {
        "CLAUDE_CODE_MAX_RETRIES = \"0\", "
    } else {
        ""
    };
    let (tg, _env, d, mcp) = claude_phone(
        &model,
        retries,
        "[jobs]\nhard_timeout_secs = 600\n\
         [breakers.claude_code]\nfailure_threshold = 2\nsuccess_threshold = 1\ntimeout_seconds = 5\nhalf_open_requests = 1\n",
        if no_retries { 1 } else { 2 },
    )
    .await;
    let gauge = || d.metric("televibe_circuit_breaker_state{name=\"claude_code\"}");
    let t0 = Instant::now();
    let first = run(&mcp, "S1", "first try").await;
    let second = run(&mcp, if no_retries { "S1" } else { "S2" }, "second try").await;
    for id in [&first, &second] {
        let j = wait_final(&mcp, id, Duration::from_secs(420)).await;
        assert_eq!(j["status"], "failed", "{j}");
    }
    assert_eq!(gauge(), Some(0.0), "two API failures open claude_code");
    let detected = t0.elapsed();
    // Degraded mode claude_api_unavailable: new jobs wait, status works, Telegram goes on.
    let held = run(&mcp, "S1", "queued while the API is down").await;
    until(
        Duration::from_secs(20),
        "the spec's message on the phone",
        || {
            tg.messages(USER).iter().any(|m| {
                m.visible
                    .contains("⚠️ Claude API temporarily unavailable. Jobs queued.")
            })
        },
    )
    .await;
    assert_eq!(
        job(&mcp, &held).await["status"],
        "queued",
        "no job starts while open"
    );
    let listed = mcp.call("list_sessions", json!({})).await.unwrap();
    assert!(
        listed["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == "S1"),
        "status and list work normally: {listed}"
    );
    let t1 = Instant::now();
    down.store(false, Ordering::SeqCst);
    let j = wait_final(&mcp, &held, Duration::from_secs(90)).await;
    assert_eq!(
        (j["status"].as_str(), j["result_text"].as_str()),
        (Some("done"), Some("Back to work.")),
        "{j}"
    );
    let recovered = t1.elapsed();
    assert_eq!(gauge(), Some(1.0), "the half-open probe closed it");
    let ids = [first.clone(), second.clone(), held.clone()];
    all_delivered(&tg, &ids, Duration::from_secs(20)).await;
    let (lost, duplicated) = deliveries(&tg, &ids);
    let told = tg
        .messages(USER)
        .iter()
        .filter(|m| m.visible.contains("Claude API temporarily unavailable"))
        .count();
    assert!(told >= 1, "told");
    if no_retries {
        record(Measured {
            key: "claude_api_failure",
            detected_after: detected,
            recovered_after: recovered,
            detection: "HTTP 529 from the model API; the jobs fail with API error 529; claude_code breaker opens",
            user_saw: "❌ on the failed jobs (API error 529)",
            lost,
            duplicated,
            settings: "real Claude Code CLI, CLAUDE_CODE_MAX_RETRIES = 0; claude_code failure_threshold = 2, timeout_seconds = 5",
        });
        record(Measured {
            key: "degraded_claude_api_unavailable",
            detected_after: detected,
            recovered_after: recovered,
            detection: "televibe_circuit_breaker_state{name=\"claude_code\"} 0",
            user_saw: "⚠️ Claude API temporarily unavailable. Jobs queued.",
            lost,
            duplicated,
            settings: "recovery: half-open after timeout_seconds = 5, one probe job, then the queue",
        });
    } else {
        record(Measured {
            key: "claude_api_failure_default_retries",
            detected_after: detected,
            recovered_after: recovered,
            detection: "HTTP 529 on every attempt; the CLI retries (system/api_retry shown), then the jobs fail with API error 529; claude_code breaker opens",
            user_saw: "⏳ model API busy, retry n/10 (HTTP 529) on the trackers, then ❌ on the failed jobs (API error 529)",
            lost,
            duplicated,
            settings: "real Claude Code CLI with its default retries; two sessions failing side by side; claude_code failure_threshold = 2, timeout_seconds = 5",
        });
    }
    assert_eq!((lost, duplicated), (0, 0));
    drop(d);
}

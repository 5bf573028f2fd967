//! Drills on the agent side: a hung agent, and the model API failing (the real Claude Code CLI against the
//! fake model answering 529).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::fake_model::{FakeModel, Reply};
use crate::fake_telegram::FakeTelegram;
use crate::harness::*;
use crate::record::{Measured, record};

#[tokio::test(flavor = "multi_thread")]
async fn runner_hang_is_killed_and_the_queue_goes_on() {
    let tg = FakeTelegram::start().await;
    let env = Env::new(&tg_config(&tg, &fake_agent("hang_timeout_secs = 3\n")));
    let _d = start(&env);
    phone_sessions(&env, &tg, 1).await;
    let mcp = Mcp::connect(&env).await;
    let hung = run(&mcp, "S1", "hang").await;
    let running = wait_status(&mcp, &hung, Duration::from_secs(20), &["running"]).await;
    // The agent never says anything: the hang starts with the job.
    let t0 = Instant::now();
    let next = run(&mcp, "S1", "queued behind the stuck job").await;
    let j = wait_final(&mcp, &hung, Duration::from_secs(60)).await;
    let detected = t0.elapsed();
    assert_eq!(
        (j["status"].as_str(), j["error_type"].as_str()),
        (Some("failed"), Some("hung")),
        "{j}"
    );
    let pgid = running["pgid"].as_i64().unwrap() as i32;
    assert!(
        televibe::jobs::process::group_members(pgid).is_empty(),
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
    let n = wait_final(&mcp, &next, Duration::from_secs(20)).await;
    assert_eq!(n["status"], "done", "the session's queue goes on: {n}");
    let recovered = t1.elapsed();
    let ids = [hung.clone(), next.clone()];
    all_delivered(&tg, &ids, Duration::from_secs(20)).await;
    let (lost, duplicated) = deliveries(&tg, &ids);
    record(Measured {
        key: "runner_hang",
        detected_after: detected,
        recovered_after: recovered,
        detection: "hang detector: no output and no CPU for hang_timeout_secs; process group SIGTERM then SIGKILL",
        user_saw: &stuck.replace(&hung, "{job_id}"),
        lost,
        duplicated,
        settings: "hang_timeout_secs = 3 (default 600), kill_grace_secs = 1 (default 30)",
    });
    assert_eq!((lost, duplicated), (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_api_failure_opens_the_breaker_and_queues() {
    let claude = claude_cli();
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
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    env.write_config(&tg_config(
        &tg,
        &format!(
            "[agent]\ncommand = \"{}\"\n\
             env = {{ ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"sk-test\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", CLAUDE_CODE_MAX_RETRIES = \"0\", HOME = \"{}\" }}\n\
             [jobs]\nhard_timeout_secs = 120\n\
             [breakers.claude_code]\nfailure_threshold = 2\nsuccess_threshold = 1\ntimeout_seconds = 5\nhalf_open_requests = 1\n",
            claude.display(),
            model.url(),
            home.display()
        ),
    ));
    let d = start(&env);
    phone_sessions(&env, &tg, 1).await;
    let mcp = Mcp::connect(&env).await;
    let gauge = || d.metric("televibe_circuit_breaker_state{name=\"claude_code\"}");
    let t0 = Instant::now();
    let first = run(&mcp, "S1", "first try").await;
    let second = run(&mcp, "S1", "second try").await;
    for id in [&first, &second] {
        let j = wait_final(&mcp, id, Duration::from_secs(90)).await;
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
    assert_eq!(
        mcp.call("list_sessions", json!({})).await.unwrap()["sessions"][0]["id"],
        "S1",
        "status and list work normally"
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
    assert_eq!(told, 1, "told once");
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
    assert_eq!((lost, duplicated), (0, 0));
    drop(d);
}

//! Work that survives usage limits and restarts, with the real agent CLIs against the loopback model APIs:
//! a subscriber's usage limit holds the job (and the one queued behind it) until the reset and then both
//! end done, told once and never counted by the breaker; an API key's rate limit the CLI waits out itself
//! is told once and is no hang; a Codex usage limit holds Codex's jobs while Claude Code's go on; a job
//! cut by a kill -9 of the daemon runs again and ends with one final tracker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_model::{FakeModel, Reply, text_of};
use crate::fake_openai::{FakeOpenAi, Reply as OpenAiReply, last_user_text};
use crate::fake_telegram::FakeTelegram;
use crate::harness::*;
use crate::jobs::{run, wait_final, wait_status};
use crate::telegram::{USER, say, start, telegram_config};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn home(env: &Env) -> std::path::PathBuf {
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    home
}

/// A model API that refuses every request with a usage limit until `delay_secs` after the first request
/// (so a slow start of the test does not eat the wait), then answers "done: <the instruction>". Answers the
/// reset (Unix seconds, 0 until the first request).
async fn limited_model(delay_secs: i64) -> (FakeModel, Arc<AtomicI64>) {
    let reset = Arc::new(AtomicI64::new(0));
    let until = reset.clone();
    let model = FakeModel::start(move |req| {
        let _ = until.compare_exchange(0, now() + delay_secs, Ordering::SeqCst, Ordering::SeqCst);
        let resets_at = until.load(Ordering::SeqCst);
        if now() < resets_at {
            Reply::UsageLimited { resets_at }
        } else {
            let text = text_of(req);
            let word = ["FIRST", "SECOND", "OTHER"]
                .into_iter()
                .rev()
                .find(|w| text.contains(w))
                .unwrap_or("?");
            Reply::Text(format!("done: {word}"))
        }
    })
    .await;
    (model, reset)
}

/// Claude Code with `credential` (`ANTHROPIC_API_KEY` or a subscriber's `CLAUDE_CODE_OAUTH_TOKEN`, after any
/// other variables of the agent's written before it) against `model`, a claude_code breaker that would open at the first failure it counts, and the phone.
fn claude_config(
    tg: &FakeTelegram,
    model: &FakeModel,
    home: &std::path::Path,
    credential: &str,
    jobs: &str,
) -> String {
    telegram_config(
        tg,
        &format!(
            "[agent]\ncommand = \"{}\"\nenv = {{ ANTHROPIC_BASE_URL = \"{}\", {credential} = \"sk-ant-test\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", HOME = \"{}\" }}\n\
             [jobs]\nhard_timeout_secs = 120\n{jobs}\n\
             [breakers.claude_code]\nfailure_threshold = 1\nsuccess_threshold = 1\ntimeout_seconds = 60\nhalf_open_requests = 1\n",
            claude_cli().display(),
            model.url(),
            home.display()
        ),
    )
}

/// The phone's daemon with Claude Code against `model` (see [`claude_config`]), project `app` registered and
/// session S1 opened from the chat.
async fn phone(
    model: &FakeModel,
    credential: &str,
    jobs: &str,
) -> (FakeTelegram, Env, Daemon, Mcp) {
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    let home = home(&env);
    env.write_config(&claude_config(&tg, model, &home, credential, jobs));
    make_repo(&env.root().join("repos/app"));
    env.hand_over();
    let d = start(&env);
    say(&tg, "/register app", "Registered").await;
    say(&tg, "/new app", "Session <b>S1</b>").await;
    let mcp = Mcp::connect(&env).await;
    (tg, env, d, mcp)
}

/// The chat's usage-limit notices (not the trackers, which show the wait too).
fn limit_notices(tg: &FakeTelegram) -> Vec<String> {
    tg.messages(USER)
        .into_iter()
        .map(|m| m.text)
        .filter(|t| t.contains("hit its usage limit"))
        .collect()
}

/// The session's jobs, oldest first.
async fn job_ids(mcp: &Mcp) -> Vec<String> {
    let jobs = mcp.call("list_jobs", json!({})).await.unwrap();
    let mut ids: Vec<String> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    ids.reverse();
    ids
}

/// Sends an instruction from the phone; answers the job it queued.
async fn phone_run(tg: &FakeTelegram, mcp: &Mcp, text: &str) -> String {
    let before = job_ids(mcp).await.len();
    tg.send_text(USER, text);
    until_async(Duration::from_secs(20), "the job queued", || async {
        job_ids(mcp).await.len() > before
    })
    .await;
    job_ids(mcp).await.pop().unwrap()
}

/// Waits until `job` went back to the queue for its first usage limit; answers it and its `not_before`.
async fn waiting(mcp: &Mcp, job: &str) -> (Value, i64) {
    until_async(
        Duration::from_secs(60),
        "the limited job back in the queue",
        || async {
            let j = mcp.call("get_job", json!({"job_id": job})).await.unwrap();
            j["status"] == "queued" && j["limit_waits"] == 1
        },
    )
    .await;
    let j = mcp.call("get_job", json!({"job_id": job})).await.unwrap();
    let not_before = chrono::DateTime::parse_from_rfc3339(j["not_before"].as_str().unwrap())
        .unwrap()
        .timestamp();
    (j, not_before)
}

fn breaker_state(d: &Daemon, name: &str) -> Option<f64> {
    d.metric(&format!(
        "televibe_circuit_breaker_state{{name=\"{name}\"}}"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscribers_usage_limit_holds_the_queue_until_the_reset_then_both_jobs_end_done() {
    let (model, reset_at) = limited_model(20).await;
    let (tg, _env, d, mcp) = phone(&model, "CLAUDE_CODE_OAUTH_TOKEN", "").await;
    let first = phone_run(&tg, &mcp, "/run FIRST").await;
    let second = phone_run(&tg, &mcp, "/run SECOND").await;

    // The limit: the first job is queued again with its reset, nothing failed, the chat told once.
    let (j, not_before) = waiting(&mcp, &first).await;
    let reset = reset_at.load(Ordering::SeqCst);
    assert!(
        (reset..=reset + 5).contains(&not_before),
        "it waits for the reset the agent reported ({reset}): {j}"
    );
    let s = mcp
        .call("get_session", json!({"session_id": "S1"}))
        .await
        .unwrap();
    let waiting = s["waiting"].as_str().unwrap_or_default().to_string();
    assert!(
        waiting.starts_with("waiting for usage limit until ") && waiting.ends_with(" UTC"),
        "{s}"
    );
    let conversation = s["conversation_id"].as_str().unwrap().to_string();
    until(
        Duration::from_secs(20),
        "the chat told of the limit",
        || !limit_notices(&tg).is_empty(),
    )
    .await;
    let resume = televibe::core::jobs::usage::resume_time(not_before);
    assert!(
        limit_notices(&tg)[0].contains(&format!("resumes at {resume}")),
        "{:?}",
        limit_notices(&tg)
    );
    let q = mcp
        .call("get_job", json!({"job_id": second}))
        .await
        .unwrap();
    assert_eq!(q["status"], "queued", "the job behind it waits: {q}");
    assert_eq!(
        breaker_state(&d, "claude_code"),
        Some(1.0),
        "the breaker does not count a usage limit"
    );
    say(&tg, "/sessions", "waiting for usage limit until").await;
    say(&tg, "/status", "<b>S1</b> waiting for usage limit until").await;
    say(&tg, "/usage", "five_hour").await;
    let usage = mcp.call("get_usage", json!({})).await.unwrap();
    let claude = usage["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "claude")
        .unwrap()
        .clone();
    assert_eq!(claude["limited_until"], json!(reset), "{usage}");
    assert!(
        claude["windows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "five_hour" && w["limited"] == true),
        "{usage}"
    );

    // At the reset both run, in order, and end done; the first resumed its conversation.
    let a = wait_final(&mcp, &first, Duration::from_secs(90)).await;
    let b = wait_final(&mcp, &second, Duration::from_secs(60)).await;
    assert_eq!(
        (a["status"].as_str(), a["result_text"].as_str()),
        (Some("done"), Some("done: FIRST")),
        "{a}"
    );
    assert_eq!(
        (b["status"].as_str(), b["result_text"].as_str()),
        (Some("done"), Some("done: SECOND")),
        "{b}"
    );
    assert!(
        b["started_at"].as_str() >= a["finished_at"].as_str(),
        "{a} {b}"
    );
    let s = mcp
        .call("get_session", json!({"session_id": "S1"}))
        .await
        .unwrap();
    assert_eq!(
        s["conversation_id"], conversation,
        "the conversation resumed: {s}"
    );
    assert!(s.get("waiting").is_none(), "{s}");
    assert_eq!(breaker_state(&d, "claude_code"), Some(1.0));
    until(Duration::from_secs(20), "both results on the phone", || {
        tg.messages(USER)
            .iter()
            .filter(|m| m.text.contains("done: FIRST") || m.text.contains("done: SECOND"))
            .count()
            >= 2
    })
    .await;
    assert_eq!(
        limit_notices(&tg).len(),
        1,
        "one notice per limit, not per job: {:?}",
        limit_notices(&tg)
    );
    drop(mcp);
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_the_cli_waits_out_itself_is_told_once_and_is_no_hang() {
    let (model, _) = limited_model(12).await;
    // Silent for 12 s while it waits: far past the hang timeout.
    let (tg, _env, d, mcp) = phone(&model, "ANTHROPIC_API_KEY", "hang_timeout_secs = 4").await;
    let first = phone_run(&tg, &mcp, "/run FIRST").await;
    until(
        Duration::from_secs(30),
        "the chat told of the limit",
        || !limit_notices(&tg).is_empty(),
    )
    .await;
    let j = wait_final(&mcp, &first, Duration::from_secs(60)).await;
    assert_eq!(
        (j["status"].as_str(), j["result_text"].as_str()),
        (Some("done"), Some("done: FIRST")),
        "{j}"
    );
    assert_eq!(j["limit_waits"], 0, "the CLI waited itself: {j}");
    assert_eq!(model.requests().len(), 2, "one refused, one answered");
    assert_eq!(breaker_state(&d, "claude_code"), Some(1.0));
    assert_eq!(limit_notices(&tg).len(), 1, "{:?}", limit_notices(&tg));
    drop(mcp);
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_keys_limit_the_cli_does_not_wait_out_waits_for_the_reset_its_429_named() {
    let (model, reset_at) = limited_model(10).await;
    // No retries of its own: the run ends on the 429, whose reset only its headers name (the egress
    // proxy reads them), not the CLI's output.
    let credential = "CLAUDE_CODE_MAX_RETRIES = \"0\", ANTHROPIC_API_KEY";
    let (tg, _env, d, mcp) = phone(&model, credential, "").await;
    let first = phone_run(&tg, &mcp, "/run FIRST").await;
    let (j, not_before) = waiting(&mcp, &first).await;
    let reset = reset_at.load(Ordering::SeqCst);
    assert!(
        (reset..=reset + 5).contains(&not_before),
        "the reset of the 429, not the backoff ({reset}): {j}"
    );
    let j = wait_final(&mcp, &first, Duration::from_secs(60)).await;
    assert_eq!(
        (j["status"].as_str(), j["result_text"].as_str()),
        (Some("done"), Some("done: FIRST")),
        "{j}"
    );
    assert_eq!(breaker_state(&d, "claude_code"), Some(1.0));
    assert_eq!(limit_notices(&tg).len(), 1, "{:?}", limit_notices(&tg));
    drop(mcp);
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_codex_usage_limit_holds_codex_jobs_while_claude_code_goes_on() {
    let reset_at = Arc::new(AtomicI64::new(0));
    let limit = reset_at.clone();
    // Limited for 15 s from the first request.
    let api = FakeOpenAi::start(move |req| {
        let _ = limit.compare_exchange(0, now() + 15, Ordering::SeqCst, Ordering::SeqCst);
        let resets_at = limit.load(Ordering::SeqCst);
        if now() < resets_at {
            OpenAiReply::usage_limit_reached(resets_at)
        } else {
            OpenAiReply::text(&format!("codex did: {}", last_user_text(req)))
        }
    })
    .await;
    let claude_model = FakeModel::start(|_| Reply::Text("claude did it".into())).await;
    let env = Env::new("");
    let home = home(&env);
    env.write_config(&format!(
        "[agent]\ncommand = \"{}\"\nenv = {{ ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"sk-test\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", HOME = \"{}\" }}\n{}",
        claude_cli().display(),
        claude_model.url(),
        home.display(),
        crate::codex::codex_section(&api, &home)
    ));
    make_repo(&env.root().join("repos/app"));
    env.hand_over();
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    mcp.call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    for agent in ["codex", "claude"] {
        mcp.call(
            "create_session",
            json!({"project_id": "app", "agent": agent}),
        )
        .await
        .unwrap();
    }
    let codex_job = run(&mcp, "S1", "CODEX_WORK").await;
    until_async(
        Duration::from_secs(60),
        "the Codex job waits for its limit",
        || async {
            let j = mcp
                .call("get_job", json!({"job_id": codex_job}))
                .await
                .unwrap();
            j["status"] == "queued" && j["limit_waits"] == 1
        },
    )
    .await;
    // Claude Code is not limited: its job runs now.
    let claude_job = run(&mcp, "S2", "CLAUDE_WORK").await;
    let c = wait_final(&mcp, &claude_job, Duration::from_secs(60)).await;
    assert_eq!(c["status"], "done", "{c}");
    let j = mcp
        .call("get_job", json!({"job_id": codex_job}))
        .await
        .unwrap();
    if now() < reset_at.load(Ordering::SeqCst) {
        assert_eq!(j["status"], "queued", "still waiting: {j}");
    }
    let usage = mcp.call("get_usage", json!({})).await.unwrap();
    let codex: Value = usage["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "codex")
        .unwrap()
        .clone();
    assert!(
        codex["windows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "primary" && w["window_minutes"] == 300),
        "{usage}"
    );
    let j = wait_final(&mcp, &codex_job, Duration::from_secs(90)).await;
    assert_eq!(
        (j["status"].as_str(), j["result_text"].as_str()),
        (Some("done"), Some("codex did: CODEX_WORK")),
        "{j}"
    );
    assert_eq!(breaker_state(&d, "codex"), Some(1.0));
    assert_eq!(
        d.metric("televibe_circuit_breaker_failures_total{name=\"codex\"}")
            .unwrap_or(0.0),
        0.0,
        "a usage limit is no failure of the API"
    );
    drop(mcp);
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_cut_by_a_kill_9_runs_again_and_the_chat_shows_one_final_tracker() {
    let released = Arc::new(AtomicBool::new(false));
    let gate = released.clone();
    // The first run's request never gets an answer; after the restart the model answers.
    let model = FakeModel::start(move |_| {
        if gate.load(Ordering::SeqCst) {
            Reply::Text("finished after the restart".into())
        } else {
            Reply::Stall
        }
    })
    .await;
    let (tg, env, d, mcp) = phone(&model, "ANTHROPIC_API_KEY", "hang_timeout_secs = 300").await;
    let job = phone_run(&tg, &mcp, "/run LONG_WORK").await;
    wait_status(&mcp, &job, Duration::from_secs(60), |s| s == "running").await;
    until(Duration::from_secs(60), "the model has the request", || {
        !model.requests().is_empty()
    })
    .await;
    drop(mcp);
    d.signal(libc::SIGKILL);
    let mut d = d;
    d.wait_exit(Duration::from_secs(10));
    released.store(true, Ordering::SeqCst);

    let d = start(&env);
    let mcp = Mcp::connect(&env).await;
    let j = wait_final(&mcp, &job, Duration::from_secs(90)).await;
    assert_eq!(
        (
            j["status"].as_str(),
            j["result_text"].as_str(),
            j["interruptions"].as_i64()
        ),
        (Some("done"), Some("finished after the restart"), Some(1)),
        "{j}"
    );
    let prefix: String = job.chars().take(8).collect();
    until(Duration::from_secs(30), "the final tracker", || {
        tg.messages(USER)
            .iter()
            .any(|m| m.text.contains(&prefix) && m.text.contains("finished after the restart"))
    })
    .await;
    settled(&env, &d).await;
    let trackers: Vec<String> = tg
        .messages(USER)
        .into_iter()
        .map(|m| m.text)
        .filter(|t| t.contains("<b>Job ") && t.contains(&prefix))
        .collect();
    assert_eq!(trackers.len(), 1, "one tracker for the job: {trackers:?}");
    assert!(
        trackers[0].contains("cut by a daemon restart") && trackers[0].contains("status: done"),
        "{}",
        trackers[0]
    );
    drop(mcp);
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_far_ahead_is_held_to_eight_days_and_a_waiting_job_can_be_canceled() {
    // A reset a month ahead (what an agent's output, which a job can write, might say).
    let far = now() + 30 * 86_400;
    let model = FakeModel::start(move |_| Reply::UsageLimited { resets_at: far }).await;
    let (tg, _env, d, mcp) = phone(&model, "CLAUDE_CODE_OAUTH_TOKEN", "").await;
    let job = phone_run(&tg, &mcp, "/run FIRST").await;
    let (j, not_before) = waiting(&mcp, &job).await;
    let most = now() + televibe::core::jobs::usage::MAX_RESET_AHEAD_SECS + 5;
    assert!(not_before <= most, "held to eight days: {j}");
    mcp.call("cancel_job", json!({"job_id": job}))
        .await
        .unwrap();
    let j = wait_final(&mcp, &job, Duration::from_secs(10)).await;
    assert_eq!(j["status"], "canceled", "{j}");
    let s = mcp
        .call("get_session", json!({"session_id": "S1"}))
        .await
        .unwrap();
    assert!(s.get("waiting").is_none(), "nothing waits any more: {s}");
    assert_eq!(model.requests().len(), 1, "it never ran again");
    drop(mcp);
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_that_cannot_be_resumed_is_started_anew() {
    let model =
        FakeModel::start(|req| Reply::Text(format!("answer to {}", text_of(req).len()))).await;
    let (tg, env, d, mcp) = phone(&model, "ANTHROPIC_API_KEY", "").await;
    let first = phone_run(&tg, &mcp, "/run FIRST").await;
    assert_eq!(
        wait_final(&mcp, &first, Duration::from_secs(60)).await["status"],
        "done"
    );
    let s = mcp
        .call("get_session", json!({"session_id": "S1"}))
        .await
        .unwrap();
    let old = s["conversation_id"].as_str().unwrap().to_string();
    // The agent's saved conversations are gone (a run cut before it saved one, or removed by hand).
    let saved = env.root().join("agents/app/S1/projects");
    assert!(saved.is_dir(), "{}", saved.display());
    std::fs::remove_dir_all(&saved).unwrap();
    let second = phone_run(&tg, &mcp, "/run SECOND").await;
    let j = wait_final(&mcp, &second, Duration::from_secs(60)).await;
    assert_eq!(j["status"], "done", "{j}");
    let s = mcp
        .call("get_session", json!({"session_id": "S1"}))
        .await
        .unwrap();
    let new = s["conversation_id"].as_str().unwrap_or_default();
    assert!(!new.is_empty() && new != old, "a new conversation: {s}");
    drop(mcp);
    drop(d);
}

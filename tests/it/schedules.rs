//! Scheduled instructions on the real daemon: a schedule every minute runs twice as two real Claude Code
//! jobs (the scheduler's clock moved on by the test hook instead of waiting), a run missed while the daemon
//! was down runs once at start, refusals change nothing, and a closed session's schedule is removed and its
//! chat told, through MCP and through Telegram.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use serde_json::{Value, json};

use crate::fake_model::{FakeModel, Reply};
use crate::fake_telegram::FakeTelegram;
use crate::harness::*;
use crate::jobs::{session, wait_final};
use crate::telegram::{FAKE_AGENT, USER, say, start, telegram_config, texts};

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

/// The scheduler's clock, as the test hook answers it.
async fn scheduler_now(mcp: &Mcp) -> DateTime<Utc> {
    shift(mcp, 0).await
}

async fn shift(mcp: &Mcp, secs: i64) -> DateTime<Utc> {
    let r = mcp
        .call("debug_shift_scheduler_clock", json!({"secs": secs}))
        .await
        .unwrap();
    time(&r["scheduler_now"])
}

/// Moves the scheduler's clock just past `t`.
async fn shift_past(mcp: &Mcp, t: DateTime<Utc>) {
    let now = scheduler_now(mcp).await;
    shift(mcp, (t - now).num_seconds().max(0) + 1).await;
}

async fn jobs_of(mcp: &Mcp, session: &str) -> Vec<Value> {
    mcp.call("list_jobs", json!({"session_id": session}))
        .await
        .unwrap()["jobs"]
        .as_array()
        .unwrap()
        .clone()
}

async fn until_jobs(mcp: &Mcp, session: &str, n: usize) -> Vec<Value> {
    until_async(
        Duration::from_secs(20),
        &format!("{n} jobs in {session}"),
        || async { jobs_of(mcp, session).await.len() >= n },
    )
    .await;
    jobs_of(mcp, session).await
}

async fn schedule(mcp: &Mcp, id: &str) -> Value {
    let all = mcp.call("list_schedules", json!({})).await.unwrap();
    all["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no schedule {id} in {all}"))
}

fn audit(env: &Env, event: &str) -> Vec<Value> {
    std::fs::read_to_string(env.orchestrator().join("logs/audit.log"))
        .unwrap_or_default()
        .lines()
        .map(json)
        .filter(|r| r["event"] == event)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_every_minute_schedule_runs_twice_as_two_real_jobs() {
    let claude = claude_cli();
    let model = FakeModel::start(|_| Reply::Text("Checked, all fine.".into())).await;
    let env = Env::new("");
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    env.write_config(&format!(
        "[agent]\ncommand = \"{}\"\n\
         env = {{ ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"sk-test\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", HOME = \"{}\" }}\n",
        claude.display(),
        model.url(),
        home.display()
    ));
    let _d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;

    // Refusals write nothing.
    let ok = |cron: &str, instruction: &str| json!({"session_id": "S1", "cron": cron, "instruction": instruction});
    for cron in [
        "* * * *",
        "* * * * * *",
        "61 * * * *",
        "@hourly",
        "a * * * *",
        "0 0 30 2 *",
    ] {
        let e = mcp
            .refused(
                "schedule_instruction",
                ok(cron, "check"),
                "INVALID_SCHEDULE",
            )
            .await;
        assert!(!e.message.is_empty(), "{cron}");
    }
    mcp.refused(
        "schedule_instruction",
        ok("* * * * *", "  "),
        "INSTRUCTION_EMPTY",
    )
    .await;
    mcp.refused(
        "schedule_instruction",
        ok("* * * * *", &"x".repeat(10_001)),
        "INSTRUCTION_TOO_LONG",
    )
    .await;
    mcp.refused(
        "schedule_instruction",
        json!({"session_id": "S9", "cron": "* * * * *", "instruction": "check"}),
        "SESSION_NOT_FOUND",
    )
    .await;
    mcp.refused(
        "schedule_instruction",
        json!({"session_id": "S1", "cron": "* * * * *", "instruction": "check", "agent": "nope"}),
        "UNKNOWN_AGENT",
    )
    .await;
    mcp.refused(
        "cancel_schedule",
        json!({"schedule_id": "SC9"}),
        "SCHEDULE_NOT_FOUND",
    )
    .await;
    mcp.refused(
        "list_schedules",
        json!({"session_id": "S9"}),
        "SESSION_NOT_FOUND",
    )
    .await;
    assert_eq!(
        mcp.call("list_schedules", json!({})).await.unwrap()["schedules"],
        json!([])
    );
    assert!(audit(&env, "schedule.created").is_empty());

    let before = scheduler_now(&mcp).await;
    let s = mcp
        .call(
            "schedule_instruction",
            json!({"session_id": "S1", "cron": "*  *  * * *", "instruction": "check the build"}),
        )
        .await
        .unwrap();
    assert_eq!(s["id"], "SC1", "{s}");
    assert_eq!(s["cron"], "* * * * *");
    assert_eq!(s["runs"], 0);
    let first = time(&s["next_run_at"]);
    assert!(first > before && first.second() == 0, "{s}");
    assert_eq!(
        mcp.call("list_schedules", json!({"session_id": "S1"}))
            .await
            .unwrap()["schedules"][0]["id"],
        "SC1"
    );

    // The first occurrence: one real job.
    shift_past(&mcp, first).await;
    let jobs = until_jobs(&mcp, "S1", 1).await;
    let sc = schedule(&mcp, "SC1").await;
    assert_eq!(sc["runs"], 1, "{sc}");
    assert_eq!(time(&sc["last_run_at"]), first, "{sc}");
    assert_eq!(sc["last_job_id"], jobs[0]["id"], "{sc}");
    let second = time(&sc["next_run_at"]);
    assert_eq!(second, first + chrono::TimeDelta::minutes(1), "{sc}");
    let j1 = wait_final(
        &mcp,
        jobs[0]["id"].as_str().unwrap(),
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(j1["status"], "done", "{j1}");
    assert_eq!(j1["instruction"], "check the build");
    assert_eq!(j1["agent"], "claude");
    assert!(
        j1["result_text"]
            .as_str()
            .is_some_and(|t| t.contains("all fine")),
        "{j1}"
    );

    // The next minute: the second job. The schedule is canceled at once (before the minute after could
    // come on its own): it runs no more, and a second cancel answers the same.
    shift_past(&mcp, second).await;
    let jobs = until_jobs(&mcp, "S1", 2).await;
    let sc = schedule(&mcp, "SC1").await;
    assert_eq!(sc["runs"], 2, "{sc}");
    assert_eq!(time(&sc["last_run_at"]), second, "{sc}");
    let c = mcp
        .call("cancel_schedule", json!({"schedule_id": "sc1"}))
        .await
        .unwrap();
    assert_eq!(c["removed_reason"], "canceled", "{c}");
    assert_eq!(c["runs"], 2, "{c}");
    assert_eq!(
        mcp.call("cancel_schedule", json!({"schedule_id": "SC1"}))
            .await
            .unwrap()["removed_at"],
        c["removed_at"]
    );
    assert_eq!(
        mcp.call("list_schedules", json!({})).await.unwrap()["schedules"],
        json!([])
    );
    let j2 = wait_final(
        &mcp,
        jobs[0]["id"].as_str().unwrap(),
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(j2["status"], "done", "{j2}");
    assert_eq!(j2["instruction"], "check the build");
    assert_ne!(j2["id"], j1["id"]);

    // Ten minutes on, another schedule's run marks that the scheduler went past them: SC1 queued nothing.
    let other = mcp
        .call(
            "schedule_instruction",
            json!({"session_id": "S1", "cron": "*/10 * * * *", "instruction": "the other schedule"}),
        )
        .await
        .unwrap();
    assert_eq!(other["id"], "SC2", "{other}");
    shift_past(&mcp, time(&other["next_run_at"])).await;
    let jobs = until_jobs(&mcp, "S1", 3).await;
    let instructions: Vec<&str> = jobs
        .iter()
        .map(|j| j["instruction"].as_str().unwrap())
        .collect();
    assert_eq!(
        instructions,
        ["the other schedule", "check the build", "check the build"],
        "{jobs:?}"
    );
    let ran: Vec<Value> = audit(&env, "schedule.ran")
        .into_iter()
        .filter(|r| r["details"]["schedule_id"] == "SC1")
        .collect();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(ran.iter().all(|r| r["actor"] == "scheduler"), "{ran:?}");
    assert!(
        ran.iter().all(|r| r["details"]["created_by"]
            .as_str()
            .unwrap()
            .starts_with("mcp")),
        "{ran:?}"
    );
    assert_eq!(audit(&env, "schedule.created").len(), 2);
    assert_eq!(audit(&env, "schedule.canceled").len(), 1);
}

/// An offset for the scheduler's clock that puts it at half past an hour, so hourly occurrences are
/// half an hour away either side whatever time the test runs.
fn half_past() -> i64 {
    let now = Utc::now();
    let into_hour = i64::from(now.minute() * 60 + now.second());
    (1800 - into_hour).rem_euclid(3600)
}

fn start_at(env: &Env, offset: i64) -> Daemon {
    env.start_with(|c| {
        c.env(
            "TELEVIBE_DEBUG__SCHEDULER_CLOCK_OFFSET_SECS",
            offset.to_string(),
        );
    })
}

async fn count_events(env: &Env, kind: &str) -> u64 {
    let store = env.store_read_only().await;
    let n = store.reader_count_events(kind).await.unwrap();
    store.close().await;
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_missed_while_the_daemon_was_down_runs_once_at_start() {
    let env = Env::new(&format!(
        "[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n"
    ));
    let at = half_past();
    let d = start_at(&env, at);
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    let s = mcp
        .call(
            "schedule_instruction",
            json!({"session_id": "S1", "cron": "0 * * * *", "instruction": "hourly check"}),
        )
        .await
        .unwrap();
    let due = time(&s["next_run_at"]);
    assert_eq!((due.minute(), due.second()), (0, 0), "{s}");
    drop(mcp);
    assert!(d.stop().success());

    // Three occurrences pass while the daemon is down: one run at start, standing for the latest. The
    // scheduler's first pass ends before the control socket is bound, so it is over once the daemon is up.
    let later = at + 3 * 3600;
    let d = start_at(&env, later);
    let mcp = Mcp::connect(&env).await;
    let jobs = jobs_of(&mcp, "S1").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["instruction"], "hourly check");
    let sc = schedule(&mcp, "SC1").await;
    let hour = chrono::TimeDelta::hours(1);
    assert_eq!(sc["runs"], 1, "{sc}");
    assert_eq!(time(&sc["last_run_at"]), due + hour * 2, "{sc}");
    assert_eq!(time(&sc["next_run_at"]), due + hour * 3, "{sc}");
    let j = wait_final(
        &mcp,
        jobs[0]["id"].as_str().unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(j["status"], "done", "{j}");
    drop(mcp);
    assert!(d.stop().success());

    // Started again at the same time: that occurrence ran already, nothing more.
    let d = start_at(&env, later);
    let mcp = Mcp::connect(&env).await;
    assert_eq!(jobs_of(&mcp, "S1").await.len(), 1);
    // A restarted scheduler reads the schedules again and goes on with the next occurrence.
    assert!(env.run(&["admin", "panic", "scheduler"]).status.success());
    until(Duration::from_secs(10), "the scheduler restarted", || {
        let t = json(&String::from_utf8_lossy(
            &env.run(&["admin", "tree", "--json"]).stdout,
        ));
        t["children"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "scheduler" && c["restarts"] == 1 && c["status"] == "running")
    })
    .await;
    shift_past(&mcp, due + hour * 3).await;
    let jobs = until_jobs(&mcp, "S1", 2).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    wait_final(
        &mcp,
        jobs[0]["id"].as_str().unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(schedule(&mcp, "SC1").await["runs"], 2);
    drop(mcp);
    assert!(d.stop().success());

    // The session closed while the daemon was down (as a boot reconciliation closes one): at its next due
    // time the schedule is removed, the session's chat told (an outbox row), and nothing queued.
    let store = env.store().await;
    store
        .set_session_state("S1", televibe::domain::SessionState::Closed)
        .await
        .unwrap();
    store.close().await;
    let d = start_at(&env, at + 6 * 3600);
    let mcp = Mcp::connect(&env).await;
    assert_eq!(
        mcp.call("list_schedules", json!({})).await.unwrap()["schedules"],
        json!([])
    );
    assert_eq!(jobs_of(&mcp, "S1").await.len(), 2);
    assert_eq!(count_events(&env, "schedule.removed").await, 1);
    let removed = audit(&env, "schedule.removed");
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["actor"], "scheduler");
    assert_eq!(removed[0]["details"]["reason"], "its session S1 was closed");
    drop(mcp);
    assert!(d.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn from_the_phone_every_lists_cancels_and_a_closed_session_takes_its_schedule_along() {
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&telegram_config(
        &tg,
        &format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n"),
    ));
    make_repo(&env.root().join("repos/app"));
    let d = start(&env);
    say(&tg, "/register app", "Registered").await;
    say(&tg, "/new app", "Session <b>S1</b>").await;

    say(&tg, "/every", "usage: /every").await;
    say(&tg, "/every 0 9 * *", "usage: /every").await;
    say(&tg, "/every 61 * * * * check", "INVALID_SCHEDULE").await;
    say(
        &tg,
        "/every 0 9 * * 1-5 run the tests",
        "Scheduled <b>SC1</b>",
    )
    .await;
    let answer = texts(&tg)
        .into_iter()
        .find(|t| t.contains("Scheduled <b>SC1</b>"))
        .unwrap();
    assert!(
        answer.contains("Session S1")
            && answer.contains("<code>0 9 * * 1-5</code> (UTC)")
            && answer.contains(":00 UTC")
            && answer.contains("run the tests"),
        "{answer}"
    );
    say(
        &tg,
        "/every */5 * * * * look at the logs",
        "Scheduled <b>SC2</b>",
    )
    .await;
    say(&tg, "/schedules", "<b>SC2</b>").await;
    let list = texts(&tg).pop().unwrap();
    assert!(
        list.contains("<b>SC1</b>") && list.contains("<code>*/5 * * * *</code>"),
        "{list}"
    );
    say(&tg, "/unschedule", "usage: /unschedule").await;
    say(&tg, "/unschedule SC7", "SCHEDULE_NOT_FOUND").await;
    say(&tg, "/unschedule sc2", "Schedule <b>SC2</b> canceled").await;

    // Closing the session removes SC1 and says so in the chat; the canceled SC2 is not mentioned again.
    say(&tg, "/close", "closed").await;
    until(Duration::from_secs(20), "the removal notice", || {
        texts(&tg).iter().any(|t| {
            t.contains("Schedule <b>SC1</b>")
                && t.contains("was removed: its session S1 was closed")
        })
    })
    .await;
    say(&tg, "/every * * * * * again", "SESSION_CLOSING").await;
    settled(&env, &d).await;
    assert_eq!(
        texts(&tg)
            .iter()
            .filter(|t| t.contains("was removed"))
            .count(),
        1
    );
    let mcp = Mcp::connect(&env).await;
    assert_eq!(
        mcp.call("list_schedules", json!({})).await.unwrap()["schedules"],
        json!([])
    );
    assert!(jobs_of(&mcp, "S1").await.is_empty());
    let removed = audit(&env, "schedule.removed");
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["actor"], format!("telegram:{USER}"));
    assert_eq!(removed[0]["details"]["schedule_id"], "SC1");
    let canceled = audit(&env, "schedule.canceled");
    assert_eq!(canceled.len(), 1, "{canceled:?}");
    assert_eq!(canceled[0]["details"]["schedule_id"], "SC2");
    tg.assert_never_flood_limited();
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_occurrence_that_finds_the_queue_full_is_skipped_and_said_so() {
    let env = Env::new(&format!(
        "[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\nmax_queued_per_session = 1\n"
    ));
    let _d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    let run = |instruction: &'static str| {
        let mcp = &mcp;
        async move {
            mcp.call(
                "run_instruction",
                json!({"session_id": "S1", "instruction": instruction}),
            )
            .await
            .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let slow = run("be slow please").await;
    crate::jobs::wait_status(&mcp, &slow, Duration::from_secs(20), |s| s == "running").await;
    let waiting = run("wait in the queue").await;
    let s = mcp
        .call(
            "schedule_instruction",
            json!({"session_id": "S1", "cron": "* * * * *", "instruction": "scheduled"}),
        )
        .await
        .unwrap();
    let first = time(&s["next_run_at"]);
    shift_past(&mcp, first).await;
    until_async(Duration::from_secs(20), "the skip notice", || async {
        count_events(&env, "schedule.skipped").await == 1
    })
    .await;
    let sc = schedule(&mcp, "SC1").await;
    assert_eq!(sc["runs"], 0, "{sc}");
    assert!(time(&sc["next_run_at"]) > first, "{sc}");
    assert_eq!(jobs_of(&mcp, "S1").await.len(), 2);

    // Room again: the next occurrence queues its job.
    for id in [&waiting, &slow] {
        mcp.call("cancel_job", json!({"job_id": id})).await.unwrap();
    }
    wait_final(&mcp, &slow, Duration::from_secs(20)).await;
    shift_past(&mcp, time(&sc["next_run_at"])).await;
    let jobs = until_jobs(&mcp, "S1", 3).await;
    assert_eq!(jobs[0]["instruction"], "scheduled", "{jobs:?}");
    assert_eq!(schedule(&mcp, "SC1").await["runs"], 1);
    assert_eq!(count_events(&env, "schedule.skipped").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_occurrence_while_the_previous_run_goes_on_is_passed_over_quietly() {
    let env = Env::new(&format!(
        "[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n"
    ));
    let _d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    let s = mcp
        .call(
            "schedule_instruction",
            json!({"session_id": "S1", "cron": "* * * * *", "instruction": "hang"}),
        )
        .await
        .unwrap();
    shift_past(&mcp, time(&s["next_run_at"])).await;
    let jobs = until_jobs(&mcp, "S1", 1).await;
    let job = jobs[0]["id"].as_str().unwrap().to_string();
    crate::jobs::wait_status(&mcp, &job, Duration::from_secs(20), |s| s == "running").await;
    // The next minute comes while the first run still runs: no second job queues behind it, and nobody
    // is told (nothing went wrong).
    let second = time(&schedule(&mcp, "SC1").await["next_run_at"]);
    shift_past(&mcp, second).await;
    until_async(
        Duration::from_secs(20),
        "the occurrence passed over",
        || async { time(&schedule(&mcp, "SC1").await["next_run_at"]) > second },
    )
    .await;
    let sc = schedule(&mcp, "SC1").await;
    assert_eq!(sc["runs"], 1, "{sc}");
    assert_eq!(jobs_of(&mcp, "S1").await.len(), 1, "no second job");
    assert_eq!(count_events(&env, "schedule.skipped").await, 0);
    // Once it ended, the next occurrence runs.
    mcp.call("cancel_job", json!({"job_id": job}))
        .await
        .unwrap();
    wait_final(&mcp, &job, Duration::from_secs(20)).await;
    shift_past(&mcp, time(&sc["next_run_at"])).await;
    let jobs = until_jobs(&mcp, "S1", 2).await;
    assert_eq!(schedule(&mcp, "SC1").await["runs"], 2);
    mcp.call("cancel_schedule", json!({"schedule_id": "SC1"}))
        .await
        .unwrap();
    for j in jobs {
        let _ = mcp.call("cancel_job", json!({"job_id": j["id"]})).await;
    }
}

//! The notifier against a Bot API as unkind as the world: calls applied whose answer is lost, connections
//! black-holed, a gateway's HTML 502, flood limits stricter than Telegram's, and a daemon killed while a
//! tracker's `sendMessage` waits for its answer. Nothing is lost; what may be sent twice is bounded as the
//! README's "Crash windows and lost answers" says.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake_telegram::{FakeTelegram, Fault, Limits, Sent};
use crate::harness::*;
use crate::jobs::wait_final;
use crate::telegram::{FAKE_AGENT, USER, say, start, telegram_config, texts};

async fn setup(tg: &FakeTelegram) -> (Env, Daemon) {
    let env = Env::new("");
    env.write_config(&telegram_config(
        tg,
        &format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n"),
    ));
    make_repo(&env.root().join("repos/app"));
    let d = start(&env);
    say(tg, "/register app", "Registered").await;
    say(tg, "/new app", "Session <b>S1</b>").await;
    (env, d)
}

async fn run(mcp: &Mcp, instruction: &str) -> String {
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

/// Every message the user got about a job (its tracker, and any copy of it).
fn trackers(tg: &FakeTelegram, id: &str) -> Vec<Sent> {
    let head = format!("<b>Job {}</b>", &id[..8]);
    tg.messages(USER)
        .into_iter()
        .filter(|m| m.text.contains(&head))
        .collect()
}

async fn shown_final(tg: &FakeTelegram, id: &str, icon: &str) {
    until(
        Duration::from_secs(60),
        &format!("job {id} shown {icon}"),
        || trackers(tg, id).iter().any(|m| m.text.contains(icon)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_answers_black_holes_and_html_502s_lose_nothing() {
    let tg = FakeTelegram::start().await;
    let (env, d) = setup(&tg).await;
    let mcp = Mcp::connect(&env).await;
    // A job holds the session, so the next ones queue and their trackers exist before they end.
    let hold = run(&mcp, "hang").await;
    until(Duration::from_secs(30), "the holding job's tracker", || {
        !trackers(&tg, &hold).is_empty()
    })
    .await;
    // The next tracker's first send takes effect, and its answer is lost.
    tg.fail_next_matching("sendMessage", "<b>Job ", 1, Fault::AnswerLost);
    let lost_send = run(&mcp, "quick one").await;
    until(Duration::from_secs(30), "the lost send retried", || {
        trackers(&tg, &lost_send).len() == 2
    })
    .await;
    let other = run(&mcp, "quick one").await;
    until(Duration::from_secs(30), "the third tracker", || {
        !trackers(&tg, &other).is_empty()
    })
    .await;
    // Final edits: one applied with its answer lost, one black-holed until the client gives up.
    tg.fail_next_matching("editMessageText", "✅", 1, Fault::AnswerLost);
    tg.fail_next_matching("editMessageText", "✅", 1, Fault::BlackHole);
    mcp.call("cancel_job", json!({"job_id": hold}))
        .await
        .unwrap();
    for id in [&lost_send, &other] {
        assert_eq!(
            wait_final(&mcp, id, Duration::from_secs(60)).await["status"],
            "done"
        );
        shown_final(&tg, id, "✅").await;
    }
    // A gateway answers a reply with HTML pages, twice; then a reply's answer is lost.
    tg.fail_next("sendMessage", 2, Fault::Html502);
    say(&tg, "/projects", "<b>Projects</b>").await;
    tg.fail_next_matching("sendMessage", "▶️ <b>S1</b>", 1, Fault::AnswerLost);
    say(&tg, "/sessions", "▶️ <b>S1</b>").await;
    assert_eq!(tg.faults_left(), 0, "every fault was met");
    // Everything sent before the marker went first: a repeat would be among them.
    say(&tg, "/help", "TeleVibeCode").await;
    for id in [&hold, &lost_send, &other] {
        let finals = trackers(&tg, id)
            .iter()
            .filter(|m| m.text.contains("✅") || m.text.contains("🚫"))
            .count();
        assert_eq!(finals, 1, "job {id}: its final state shown once");
    }
    // An edit whose answer was lost is simply repeated ("message is not modified" settles it): no copy.
    assert_eq!(trackers(&tg, &other).len(), 1);
    assert_eq!(trackers(&tg, &hold).len(), 1);
    // A send whose answer was lost may have been applied: it is sent again, one copy per lost answer.
    assert_eq!(trackers(&tg, &lost_send).len(), 2);
    let count = |needle: &str| texts(&tg).iter().filter(|t| t.contains(needle)).count();
    assert_eq!(count("<b>Projects</b>"), 1, "a 502 page applied nothing");
    assert_eq!(count("▶️ <b>S1</b>"), 2, "one copy per lost answer");
    // A black-holed edit was given up by the client's own timeout and sent again.
    let edits = tg.calls_of("editMessageText");
    assert!(
        edits.iter().filter(|c| c.error == Some(400)).count() >= 1,
        "the repeated edit found the message already up to date"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn flood_limits_stricter_than_telegrams_delay_but_lose_nothing() {
    let tg = FakeTelegram::start().await;
    let (env, d) = setup(&tg).await;
    // Two messages in a burst, then one every two seconds: half what the bot's pacing assumes.
    tg.set_limits(Limits {
        burst: 2.0,
        per_second: 0.5,
        group_per_minute: 20,
        global_per_second: 30,
    });
    let mcp = Mcp::connect(&env).await;
    let job = run(&mcp, "quick one").await;
    for _ in 0..4 {
        tg.send_text(USER, "/projects");
    }
    assert_eq!(
        wait_final(&mcp, &job, Duration::from_secs(30)).await["status"],
        "done"
    );
    until(
        Duration::from_secs(90),
        "four replies and the result",
        || {
            texts(&tg).iter().filter(|t| t.contains("Projects")).count() == 4
                && trackers(&tg, &job).iter().any(|m| m.text.contains("✅"))
        },
    )
    .await;
    say(&tg, "/help", "TeleVibeCode").await;
    assert_eq!(
        texts(&tg).iter().filter(|t| t.contains("Projects")).count(),
        4,
        "each reply once"
    );
    assert_eq!(trackers(&tg, &job).len(), 1, "one tracker");
    // 429s were earned, and after each nothing went to that chat before its retry_after.
    let calls: Vec<_> = tg
        .calls()
        .into_iter()
        .filter(|c| c.params.get("chat_id").is_some())
        .collect();
    let limited: Vec<_> = calls.iter().filter(|c| c.error == Some(429)).collect();
    assert!(!limited.is_empty(), "the stricter limits were met");
    for l in &limited {
        let until_ok = l.at + Duration::from_secs(l.retry_after.unwrap());
        let early = calls
            .iter()
            .filter(|c| c.params["chat_id"] == l.params["chat_id"])
            .filter(|c| c.at > l.at && c.at + Duration::from_millis(50) < until_ok)
            .count();
        assert_eq!(early, 0, "a call went before retry_after ({l:?})");
    }
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_while_a_tracker_send_waits_leaves_one_stale_copy_at_most() {
    let tg = FakeTelegram::start().await;
    let (env, d) = setup(&tg).await;
    // The tracker's first sendMessage takes effect and its answer never comes.
    tg.fail_next_matching("sendMessage", "<b>Job ", 1, Fault::ApplyThenHang);
    let mcp = Mcp::connect(&env).await;
    let job = run(&mcp, "quick one").await;
    assert_eq!(
        wait_final(&mcp, &job, Duration::from_secs(30)).await["status"],
        "done"
    );
    until(Duration::from_secs(30), "the tracker applied", || {
        trackers(&tg, &job).len() == 1
    })
    .await;
    // The intent was recorded before the call; the id never was.
    let key = format!("telegram.tracker.{job}");
    let store = env.store_read_only().await;
    assert_eq!(
        store.kv_get(&key).await.unwrap(),
        Some(format!("{USER}:")),
        "the send's intent is on disk"
    );
    drop(mcp);
    let mut d = d;
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(5));
    let d2 = start(&env);
    shown_final(&tg, &job, "✅").await;
    say(&tg, "/help", "TeleVibeCode").await;
    let all = trackers(&tg, &job);
    assert_eq!(all.len(), 2, "the stale copy and one new tracker: {all:?}");
    // The stale copy shows what the job was when its send began (the job may have ended meanwhile).
    assert!(
        !all[0].text.contains("sent again"),
        "the stale copy: {}",
        all[0].text
    );
    assert!(
        all[1].text.contains("✅") && all[1].text.contains("sent again after a restart"),
        "the new tracker says an earlier copy may exist: {}",
        all[1].text
    );
    // Shown final: its row is gone.
    until_async(
        Duration::from_secs(10),
        "the tracker's row removed",
        || async { store.kv_get(&key).await.unwrap().is_none() },
    )
    .await;
    drop(d2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_history_keeps_the_tracker_rows_bounded() {
    let tg = FakeTelegram::start().await;
    let (env, d) = setup(&tg).await;
    let mcp = Mcp::connect(&env).await;
    let store = env.store_read_only().await;
    let started = Instant::now();
    let mut jobs = Vec::new();
    for round in 0..3 {
        for _ in 0..5 {
            jobs.push(run(&mcp, "quick one").await);
        }
        for id in &jobs {
            wait_final(&mcp, id, Duration::from_secs(60)).await;
        }
        until(Duration::from_secs(60), "every tracker final", || {
            jobs.iter()
                .all(|id| trackers(&tg, id).iter().any(|m| m.text.contains("✅")))
        })
        .await;
        // A tracker's row lives while its message may still be edited, and goes once it is final.
        until_async(Duration::from_secs(10), "tracker rows gone", || async {
            store.kv_count("telegram.tracker.").await.unwrap() == 0
        })
        .await;
        eprintln!(
            "round {round}: {} jobs, 0 tracker rows after {:?}",
            jobs.len(),
            started.elapsed()
        );
    }
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_claude_unavailable_notice_reaches_every_chat_with_a_held_job_once() {
    const OTHER: i64 = 4343;
    const IDLE: i64 = 4444;
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&format!(
        "[telegram]\napi_url = \"{}\"\nallowed_users = [{USER}, {OTHER}, {IDLE}]\n\
         [agent]\ncommand = \"{FAKE_AGENT}\"\n\
         [breakers.claude_code]\nfailure_threshold = 1\nsuccess_threshold = 1\ntimeout_seconds = 8\nhalf_open_requests = 1\n",
        tg.url()
    ));
    make_repo(&env.root().join("repos/app"));
    let d = start(&env);
    let ask = |chat: i64, text: &str, expect: &'static str| {
        let before = tg.messages(chat).len();
        tg.send_text(chat, text);
        let tg = &tg;
        async move {
            until(Duration::from_secs(20), expect, || {
                tg.messages(chat)
                    .iter()
                    .skip(before)
                    .any(|m| m.text.contains(expect))
            })
            .await
        }
    };
    say(&tg, "/register app", "Registered").await;
    // Two sessions follow the first chat, one the second; the third chat has none.
    say(&tg, "/new app", "Session <b>S1</b>").await;
    say(&tg, "/new app", "Session <b>S2</b>").await;
    ask(OTHER, "/new app", "Session <b>S3</b>").await;
    ask(IDLE, "/help", "TeleVibeCode").await;
    let mcp = Mcp::connect(&env).await;
    let run_in = |session: &'static str, instruction: &'static str| {
        let mcp = &mcp;
        async move {
            mcp.call(
                "run_instruction",
                json!({"session_id": session, "instruction": instruction}),
            )
            .await
            .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let crash = run_in("S1", "crash").await;
    assert_eq!(
        wait_final(&mcp, &crash, Duration::from_secs(20)).await["status"],
        "failed"
    );
    let held = [
        run_in("S1", "after the outage").await,
        run_in("S2", "after the outage").await,
        run_in("S3", "after the outage").await,
    ];
    const NOTICE: &str = "Claude API temporarily unavailable";
    let notices = |chat: i64| {
        tg.messages(chat)
            .iter()
            .filter(|m| m.text.contains(NOTICE))
            .count()
    };
    until(Duration::from_secs(20), "both chats told", || {
        notices(USER) >= 1 && notices(OTHER) >= 1
    })
    .await;
    for id in &held {
        assert_eq!(
            wait_final(&mcp, id, Duration::from_secs(60)).await["status"],
            "done"
        );
    }
    shown_final(&tg, &held[0], "✅").await;
    shown_final(&tg, &held[1], "✅").await;
    let head = format!("<b>Job {}</b>", &held[2][..8]);
    until(Duration::from_secs(30), "S3's result in its chat", || {
        tg.messages(OTHER)
            .iter()
            .any(|m| m.text.contains(&head) && m.text.contains("✅"))
    })
    .await;
    // Markers after everything: a second notice would have been sent before them.
    say(&tg, "/help", "TeleVibeCode").await;
    ask(OTHER, "/help", "TeleVibeCode").await;
    ask(IDLE, "/help", "TeleVibeCode").await;
    assert_eq!(notices(USER), 1, "once for the chat of S1 and S2");
    assert_eq!(notices(OTHER), 1, "once for the chat of S3");
    assert_eq!(notices(IDLE), 0, "not where no job waits");
    // The probe closed the breaker: the next opening is a new period, and the chat is told again.
    let crash = run_in("S1", "crash").await;
    wait_final(&mcp, &crash, Duration::from_secs(20)).await;
    let later = run_in("S2", "after the second outage").await;
    until(Duration::from_secs(20), "told again", || notices(USER) == 2).await;
    assert_eq!(
        wait_final(&mcp, &later, Duration::from_secs(60)).await["status"],
        "done"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_past_the_queue_cap_loses_no_reply_and_no_result() {
    const USERS: i64 = 60;
    const EACH: usize = 20;
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    let users: Vec<String> = std::iter::once(USER)
        .chain(5000..5000 + USERS)
        .map(|u| u.to_string())
        .collect();
    env.write_config(&format!(
        "[telegram]\napi_url = \"{}\"\nallowed_users = [{}]\n[agent]\ncommand = \"{FAKE_AGENT}\"\n",
        tg.url(),
        users.join(", ")
    ));
    make_repo(&env.root().join("repos/app"));
    let d = start(&env);
    say(&tg, "/register app", "Registered").await;
    say(&tg, "/new app", "Session <b>S1</b>").await;
    // Telegram is slow, then its gateway answers every send with 502 pages: replies pile up.
    tg.set_latency(Duration::from_millis(200));
    tg.fail_next("sendMessage", 1_000_000, Fault::Html502);
    let mcp = Mcp::connect(&env).await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(run(&mcp, "quick one").await);
    }
    for i in 0..USERS as usize * EACH {
        tg.send_text(5000 + (i as i64 % USERS), "/help");
    }
    let metric = |name: &str| d.metric(name).unwrap_or(-1.0);
    until(Duration::from_secs(60), "the queue at its cap", || {
        metric("televibe_notification_queue_size") >= 990.0
    })
    .await;
    for id in &jobs {
        assert_eq!(
            wait_final(&mcp, id, Duration::from_secs(60)).await["status"],
            "done"
        );
    }
    // The notifier restarts with a full queue: what it held is read again from the outbox.
    assert!(env.run(&["admin", "panic", "notifier"]).status.success());
    until(Duration::from_secs(30), "the queue refilled", || {
        metric("televibe_notification_queue_size") >= 990.0
    })
    .await;
    tg.clear_faults();
    tg.set_latency(Duration::ZERO);
    let helps = |u: i64| {
        tg.messages(u)
            .iter()
            .filter(|m| m.text.contains("TeleVibeCode"))
            .count()
    };
    until(Duration::from_secs(180), "every reply", || {
        (5000..5000 + USERS).all(|u| helps(u) >= EACH)
    })
    .await;
    for id in &jobs {
        shown_final(&tg, id, "✅").await;
    }
    // Nothing left anywhere to send: the outbox is delivered and the queue empty.
    let store = env.store_read_only().await;
    until_async(Duration::from_secs(30), "outbox delivered", || async {
        store.undelivered_events(0, 10).await.unwrap().is_empty()
    })
    .await;
    until(Duration::from_secs(10), "queue empty", || {
        metric("televibe_notification_queue_size") == 0.0
    })
    .await;
    for u in 5000..5000 + USERS {
        assert_eq!(helps(u), EACH, "user {u}: each reply once");
    }
    for id in &jobs {
        let finals = trackers(&tg, id)
            .iter()
            .filter(|m| m.text.contains("✅"))
            .count();
        assert_eq!(finals, 1, "job {id}: its result once");
    }
    let peak = metric("televibe_notification_queue_peak");
    eprintln!(
        "queue peak {peak}, progress dropped {}",
        metric("televibe_notifications_dropped_total")
    );
    assert!(peak <= 1000.0, "the cap held: peak {peak}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_notifier_and_telegram_actors_restart_losing_and_repeating_nothing() {
    let tg = FakeTelegram::start().await;
    let (env, d) = setup(&tg).await;
    // Replies cannot go out (a gateway answers 502 pages) while the three commands are handled.
    tg.fail_next("sendMessage", 1_000_000, Fault::Html502);
    for command in ["/projects", "/sessions", "/status"] {
        tg.send_text(USER, command);
    }
    until(Duration::from_secs(20), "the commands handled", || {
        tg.pending_updates() == 0
    })
    .await;
    let commands_set = tg.calls_of("setMyCommands").len();
    // Both actors panic with the replies unsent: the notifier's queue is gone, the poller's loop too.
    for actor in ["notifier", "telegram"] {
        let out = env.run(&["admin", "panic", actor]);
        assert!(out.status.success(), "{out:?}");
    }
    until(Duration::from_secs(20), "the poller started again", || {
        tg.calls_of("setMyCommands").len() > commands_set
    })
    .await;
    tg.clear_faults();
    until(Duration::from_secs(30), "the three replies", || {
        let t = texts(&tg);
        ["<b>Projects</b>", "▶️ <b>S1</b>", "<b>Status</b>"]
            .iter()
            .all(|x| t.iter().any(|m| m.contains(x)))
    })
    .await;
    // The poller went on from its stored offset and the notifier from the outbox: a command after the
    // restarts is answered, and nothing before it twice.
    say(&tg, "/help", "TeleVibeCode").await;
    settled(&env, &d).await;
    for x in [
        "<b>Projects</b>",
        "▶️ <b>S1</b>",
        "<b>Status</b>",
        "TeleVibeCode",
    ] {
        let n = texts(&tg).iter().filter(|m| m.contains(x)).count();
        assert_eq!(n, 1, "{x}: once");
    }
    drop(d);
}

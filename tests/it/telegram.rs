//! The Telegram front and notifier against the fake Bot API, through frankenstein as in production.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake_model::{FakeModel, Reply, after_tool};
use crate::fake_telegram::{FakeTelegram, Fault, TOKEN};
use crate::harness::*;

pub(crate) const USER: i64 = 4242;
const STRANGER: i64 = 666;
pub(crate) const FAKE_AGENT: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh");

pub(crate) fn telegram_config(tg: &FakeTelegram, extra: &str) -> String {
    format!(
        "[telegram]\napi_url = \"{}\"\nallowed_users = [{USER}]\n{extra}",
        tg.url()
    )
}

pub(crate) fn start(env: &Env) -> Daemon {
    env.start_with(|c| {
        c.env("TELEVIBE_TELEGRAM__TOKEN", TOKEN);
    })
}

/// The texts the bot sent to the user, oldest first.
pub(crate) fn texts(tg: &FakeTelegram) -> Vec<String> {
    tg.messages(USER).into_iter().map(|m| m.text).collect()
}

pub(crate) async fn say(tg: &FakeTelegram, text: &str, expect: &str) {
    tg.say(USER, text, expect, Duration::from_secs(20)).await;
}

fn tracker(tg: &FakeTelegram, marker: &str) -> Option<crate::fake_telegram::Sent> {
    tg.messages(USER)
        .into_iter()
        .find(|m| m.text.contains("<b>Job ") && m.text.contains(marker))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_drives_a_real_claude_job_from_the_phone() {
    let claude = claude_cli();
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let target = env
        .root()
        .join("workspaces/app/S1/hello.txt")
        .display()
        .to_string();
    let model = FakeModel::start(move |req| {
        if after_tool(req) {
            Reply::Text("Created <hello.txt> & done.".into())
        } else {
            Reply::ToolUse {
                name: "Write".into(),
                input: json!({"file_path": target, "content": "hello\n"}),
            }
        }
    })
    .await;
    env.write_config(&telegram_config(
        &tg,
        &format!(
            "[agent]\ncommand = \"{}\"\nextra_args = [\"--permission-mode\", \"acceptEdits\"]\n\
             env = {{ ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"sk-test\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", HOME = \"{}\" }}\n",
            claude.display(),
            model.url(),
            home.display()
        ),
    ));
    make_repo(&env.root().join("repos/app"));
    let d = start(&env);
    until(
        Duration::from_secs(10),
        "setMyCommands and deleteWebhook",
        || !tg.calls_of("setMyCommands").is_empty() && !tg.calls_of("deleteWebhook").is_empty(),
    )
    .await;
    let (code, body) = d.get("/health/ready");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["checks"]["telegram"], "ok");

    say(&tg, "/register app", "Registered").await;
    say(&tg, "/new app", "Session <b>S1</b>").await;
    tg.send_text(USER, "create hello.txt please");
    until(Duration::from_secs(90), "the tracker reaches done", || {
        tracker(&tg, "✅").is_some()
    })
    .await;
    let t = tracker(&tg, "✅").unwrap();
    assert!(
        t.text.contains("Session S1") && t.text.contains("create hello.txt please"),
        "{}",
        t.text
    );
    assert!(
        t.text.contains("Created &lt;hello.txt&gt; &amp; done."),
        "agent text is escaped: {}",
        t.text
    );
    assert!(
        t.text.contains("<code>hello.txt</code>"),
        "files changed: {}",
        t.text
    );
    assert_eq!(
        tg.messages(USER)
            .iter()
            .filter(|m| m.text.contains("<b>Job "))
            .count(),
        1
    );
    assert!(
        t.markup.to_string().contains("log:"),
        "Log / Diff buttons when done: {}",
        t.markup
    );
    assert!(
        std::fs::read_to_string(env.root().join("workspaces/app/S1/hello.txt")).unwrap()
            == "hello\n"
    );
    // A reply to the tracker runs in its session; /diff sends the change.
    say(&tg, "/diff", "hello.txt").await;
    say(&tg, "/jobs", "create hello.txt").await;
    say(&tg, "/status", "Active session: <b>S1</b>").await;
    assert!(
        tg.calls().iter().all(|c| c.error != Some(400)),
        "no message was refused: {:?}",
        tg.calls()
            .iter()
            .filter(|c| c.error.is_some())
            .collect::<Vec<_>>()
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_button_stale_button_forged_callback_and_strangers() {
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&telegram_config(
        &tg,
        &format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n"),
    ));
    make_repo(&env.root().join("repos/app"));
    let d = start(&env);
    say(&tg, "/register app", "Registered").await;
    say(&tg, "/new app", "Session <b>S1</b>").await;
    tg.send_text(USER, "/run S1 slow");
    until(
        Duration::from_secs(20),
        "a running tracker with a Cancel button",
        || tracker(&tg, "⚙️").is_some_and(|t| t.markup.to_string().contains("cancel:")),
    )
    .await;
    let t = tracker(&tg, "⚙️").unwrap();
    let data = t.markup["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .unwrap()
        .to_string();
    tg.tap(USER, USER, t.message_id, &data);
    until(
        Duration::from_secs(20),
        "the tracker shows the cancel",
        || {
            tg.message_text(USER, t.message_id)
                .is_some_and(|x| x.contains("🚫"))
        },
    )
    .await;
    // The same button again: stale, told so, nothing happens.
    let stale = tg.tap(USER, USER, t.message_id, &data);
    until(Duration::from_secs(10), "stale tap answered", || {
        tg.answered_callbacks()
            .iter()
            .any(|(id, text)| *id == stale && text.contains("already"))
    })
    .await;
    let forged = tg.tap(USER, USER, t.message_id, "cancel:00000000-dead-beef");
    until(Duration::from_secs(10), "forged tap answered", || {
        tg.answered_callbacks()
            .iter()
            .any(|(id, text)| *id == forged && text.contains("Unknown"))
    })
    .await;
    let weird = tg.tap(USER, USER, t.message_id, "rm -rf /");
    until(Duration::from_secs(10), "odd data answered", || {
        tg.answered_callbacks().iter().any(|(id, _)| *id == weird)
    })
    .await;

    // A stranger: one "access denied", one audit record a minute, nothing else, not even a tap answer.
    tg.send_text(STRANGER, "/new app");
    until(Duration::from_secs(10), "the stranger is refused", || {
        !tg.messages(STRANGER).is_empty()
    })
    .await;
    tg.send_text(STRANGER, "/close S1");
    let tap = tg.tap(STRANGER, STRANGER, t.message_id, &data);
    // Updates are handled in order: once the user's later command is answered, the stranger's were decided,
    // and a second denial would be in the outbox before that answer. It may wait out the stranger's pacing,
    // so the window closes when nothing is left to send: the outbox delivered and the queue empty.
    say(&tg, "/help", "TeleVibeCode").await;
    settled(&env, &d).await;
    let denied: Vec<_> = tg
        .messages(STRANGER)
        .into_iter()
        .filter(|m| m.text.contains("access denied"))
        .collect();
    assert_eq!(denied.len(), 1, "rate-limited denial");
    assert!(
        !tg.answered_callbacks().iter().any(|(id, _)| *id == tap),
        "the tap within the minute gets no answer"
    );
    let audit = std::fs::read_to_string(env.orchestrator().join("logs/audit.log")).unwrap();
    assert_eq!(
        audit.matches("telegram.access_denied").count(),
        1,
        "one audit row per stranger a minute: {audit}"
    );
    let mcp = Mcp::connect(&env).await;
    assert_eq!(
        mcp.call("list_sessions", json!({})).await.unwrap()["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "the stranger changed nothing"
    );

    // HTML metacharacters in agent output are escaped, and Telegram accepts every message.
    tg.send_text(USER, "/run html");
    until(
        Duration::from_secs(20),
        "the html job's tracker is done",
        || tracker(&tg, "✅").is_some(),
    )
    .await;
    let done = tracker(&tg, "✅").unwrap();
    assert!(
        done.text.contains("&lt;b&gt;unclosed &amp; &lt;script&gt;"),
        "{}",
        done.text
    );
    assert!(
        tg.calls().iter().all(|c| c.error != Some(400)),
        "{:?}",
        tg.calls()
            .iter()
            .filter(|c| c.error.is_some())
            .map(|c| (&c.method, c.error))
            .collect::<Vec<_>>()
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_burst_is_honoured_and_chats_are_paced() {
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&telegram_config(&tg, ""));
    let d = start(&env);
    say(&tg, "/help", "TeleVibeCode").await;
    tg.fail_next("sendMessage", 1, Fault::RetryAfter(2));
    for _ in 0..5 {
        tg.send_text(USER, "/projects");
    }
    until(Duration::from_secs(30), "five replies", || {
        texts(&tg).iter().filter(|t| t.contains("Projects")).count() == 5
    })
    .await;
    let sends = tg.calls_of("sendMessage");
    let limited = sends
        .iter()
        .find(|c| c.error == Some(429))
        .expect("the fake answered 429")
        .at;
    let ok: Vec<Instant> = sends
        .iter()
        .filter(|c| c.error.is_none() && c.at > limited)
        .map(|c| c.at)
        .collect();
    assert_eq!(ok.len(), 5, "no message lost");
    assert!(
        ok[0].duration_since(limited) >= Duration::from_millis(1950),
        "sent before retry_after: {:?}",
        ok[0].duration_since(limited)
    );
    for w in ok.windows(2) {
        assert!(
            w[1].duration_since(w[0]) >= Duration::from_millis(900),
            "per-chat pacing: {:?}",
            w[1].duration_since(w[0])
        );
    }
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn telegram_down_longer_than_the_breaker_then_back() {
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&telegram_config(
        &tg,
        &format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nmax_concurrent = 5\n[breakers.telegram_api]\nfailure_threshold = 3\nsuccess_threshold = 1\ntimeout_seconds = 2\nhalf_open_requests = 1\n"),
    ));
    make_repo(&env.root().join("repos/app"));
    let d = start(&env);
    say(&tg, "/register app", "Registered").await;
    for _ in 0..5 {
        say(&tg, "/new app", "Session <b>S").await;
    }
    tg.set_down(true);
    let mcp = Mcp::connect(&env).await;
    let mut jobs = Vec::new();
    for s in 1..=5 {
        let q = mcp
            .call(
                "run_instruction",
                json!({"session_id": format!("S{s}"), "instruction": "chatty"}),
            )
            .await
            .unwrap();
        jobs.push(q["id"].as_str().unwrap().to_string());
    }
    for id in &jobs {
        let deadline = Instant::now() + Duration::from_secs(60);
        while mcp.call("get_job", json!({"job_id": id})).await.unwrap()["status"] != "done" {
            assert!(Instant::now() < deadline, "job {id} did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Down for longer than the breaker's timeout (2 s here): it opened (three failures, the admin told), and
    // its half-open probe failed too (a fourth).
    let store = env.store_read_only().await;
    until_async(
        Duration::from_secs(60),
        "the breaker opened and its probe failed",
        || async {
            d.metric("televibe_circuit_breaker_failures_total{name=\"telegram_api\"}")
                .unwrap()
                >= 4.0
                && store.reader_count_events("breaker.opened").await.unwrap() >= 1
        },
    )
    .await;
    tg.set_down(false);
    until(Duration::from_secs(60), "every result delivered", || {
        jobs.iter().all(|id| {
            tg.messages(USER)
                .iter()
                .any(|m| m.text.contains(&format!("<b>Job {}", &id[..8])) && m.text.contains("✅"))
        })
    })
    .await;
    // A second copy would still be in the outbox or the queue: wait until both are empty.
    settled(&env, &d).await;
    for id in &jobs {
        let n = tg
            .messages(USER)
            .iter()
            .filter(|m| m.text.contains(&format!("<b>Job {}", &id[..8])))
            .count();
        assert_eq!(n, 1, "job {id}: one tracker, delivered once");
    }
    let dropped = d.metric("televibe_notifications_dropped_total").unwrap();
    let progress: f64 = ["job.tool_started", "job.tool_completed"]
        .iter()
        .map(|t| {
            d.metric(&format!("televibe_events_total{{event_type=\"{t}\"}}"))
                .unwrap()
        })
        .sum();
    assert!(progress >= 1200.0, "{progress}");
    assert!(
        dropped >= progress - 50.0,
        "coalesced progress is counted as dropped: {dropped} of {progress}"
    );
    // A row is marked delivered just after the message carrying it went out.
    until_async(Duration::from_secs(20), "the outbox is drained", || async {
        store
            .undelivered_events(0, 10_000)
            .await
            .unwrap()
            .iter()
            .all(|e| e.job_id.is_none())
    })
    .await;
    // Messages sent while down wait; after the network returns the poller is back within the RTO.
    say(&tg, "/help", "TeleVibeCode").await;
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_with_undelivered_results_then_each_delivered_once() {
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
    tg.set_down(true);
    let mcp = Mcp::connect(&env).await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(
            mcp.call(
                "run_instruction",
                json!({"session_id": "S1", "instruction": "quick one"}),
            )
            .await
            .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for id in &jobs {
        let deadline = Instant::now() + Duration::from_secs(30);
        while mcp.call("get_job", json!({"job_id": id})).await.unwrap()["status"] != "done" {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(mcp);
    d.signal(libc::SIGKILL);
    let mut d = d;
    d.wait_exit(Duration::from_secs(5));
    tg.set_down(false);
    let d2 = start(&env);
    until(
        Duration::from_secs(30),
        "results delivered after the restart",
        || {
            jobs.iter().all(|id| {
                tg.messages(USER).iter().any(|m| {
                    m.text.contains(&format!("<b>Job {}", &id[..8])) && m.text.contains("✅")
                })
            })
        },
    )
    .await;
    // The notifier sends a chat's messages in order: once a later answer arrives, a repeat would have too.
    say(&tg, "/help", "TeleVibeCode").await;
    for id in &jobs {
        let n = tg
            .messages(USER)
            .iter()
            .filter(|m| m.text.contains(&format!("<b>Job {}", &id[..8])))
            .count();
        assert_eq!(n, 1, "job {id} delivered exactly once");
    }
    // Updates are not handled twice across restarts. The call that would confirm the next update is held
    // (Telegram keeps an update until a later getUpdates sends a higher offset) and the daemon is killed
    // while it waits: only the offset the daemon stored can keep the restarted daemon from handling it again.
    let helps = || {
        texts(&tg)
            .iter()
            .filter(|t| t.contains("TeleVibeCode"))
            .count()
    };
    let before = helps();
    let update = tg.next_update_id();
    tg.stall_polls_from(update + 1);
    // A reply counts as delivered once its row is marked (after the Bot API took it); a kill between the
    // two sends it again, which is not what this part is about: the kill waits for the mark.
    let replies_marked = |d: &Daemon| {
        d.metric("televibe_event_delivery_seconds_count{event_type=\"chat.reply\"}")
            .unwrap_or(0.0)
    };
    let marked = replies_marked(&d2);
    say(&tg, "/help", "TeleVibeCode").await;
    until(
        Duration::from_secs(20),
        "the /help reply marked delivered",
        || replies_marked(&d2) > marked,
    )
    .await;
    let confirming = |tg: &FakeTelegram| {
        tg.arrived("getUpdates")
            .iter()
            .filter(|p| p["offset"].as_i64() == Some(update + 1))
            .count()
    };
    until(
        Duration::from_secs(20),
        "the confirming getUpdates arrived",
        || confirming(&tg) == 1,
    )
    .await;
    assert_eq!(tg.pending_updates(), 1, "the update is still unconfirmed");
    d2.signal(libc::SIGKILL);
    let mut d2 = d2;
    d2.wait_exit(Duration::from_secs(5));
    let polls = tg.arrived("getUpdates").len();
    let d3 = start(&env);
    until(
        Duration::from_secs(30),
        "the restarted daemon polls",
        || tg.arrived("getUpdates").len() > polls,
    )
    .await;
    assert_eq!(
        tg.arrived("getUpdates")[polls]["offset"].as_i64(),
        Some(update + 1),
        "the restarted daemon starts after the handled update"
    );
    tg.release_polls();
    // Updates are handled in order, so once a later command is answered a repeat would have been too.
    say(&tg, "/status", "").await;
    assert_eq!(helps(), before + 1, "the /help was answered exactly once");
    tg.assert_never_flood_limited();
    until(Duration::from_secs(10), "every update confirmed", || {
        tg.pending_updates() == 0
    })
    .await;
    drop(d3);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_slow_answers_and_long_output_as_a_document() {
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
    tg.fail_next("sendMessage", 2, Fault::Status(500));
    tg.fail_next("sendMessage", 1, Fault::Slow(Duration::from_secs(2)));
    say(&tg, "/help", "TeleVibeCode").await;
    assert_eq!(
        tg.calls_of("sendMessage")
            .iter()
            .filter(|c| c.error == Some(500))
            .count(),
        2,
        "retried after 500s"
    );
    tg.send_text(USER, "chatty");
    until(Duration::from_secs(30), "the chatty job is done", || {
        tracker(&tg, "✅").is_some()
    })
    .await;
    tg.send_text(USER, "/tail");
    until(Duration::from_secs(20), "the log as a document", || {
        !tg.documents(USER).is_empty()
    })
    .await;
    let (name, size, caption) = tg.documents(USER).remove(0);
    assert!(name.ends_with(".log") && size > 3500, "{name} {size}");
    assert!(caption.contains("Log of job"), "{caption}");
    for c in tg
        .calls_of("sendMessage")
        .iter()
        .filter(|c| c.error.is_none())
    {
        assert_eq!(c.params["parse_mode"], "HTML", "{:?}", c.params);
    }
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn group_chats_are_served_only_when_listed() {
    const LISTED: i64 = -100_111;
    const UNLISTED: i64 = -100_222;
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&telegram_config(
        &tg,
        &format!("allowed_chats = [{LISTED}]\n"),
    ));
    let d = start(&env);
    // An allowed user in an unlisted group: one hint a minute, and no command runs.
    for _ in 0..3 {
        tg.send_group_text(UNLISTED, USER, "/projects");
    }
    until(
        Duration::from_secs(10),
        "the unlisted group is told",
        || !tg.messages(UNLISTED).is_empty(),
    )
    .await;
    // In a listed group the same user is served.
    tg.send_group_text(LISTED, USER, "/projects");
    until(
        Duration::from_secs(10),
        "the listed group is served",
        || {
            tg.messages(LISTED)
                .iter()
                .any(|m| m.text.contains("Projects"))
        },
    )
    .await;
    // A stranger in the listed group is still a stranger.
    tg.send_group_text(LISTED, STRANGER, "/projects");
    until(Duration::from_secs(10), "the stranger is refused", || {
        tg.messages(LISTED)
            .iter()
            .any(|m| m.text.contains("access denied"))
    })
    .await;
    // Updates are handled in order, so the three unlisted commands were decided; a second hint would be in
    // the outbox, perhaps waiting out the group's pacing: the window closes when nothing is left to send.
    settled(&env, &d).await;
    let unlisted = tg.messages(UNLISTED);
    assert_eq!(unlisted.len(), 1, "{unlisted:?}");
    assert!(
        unlisted[0].text.contains("not served") && unlisted[0].text.contains("-100222"),
        "{}",
        unlisted[0].text
    );
    assert!(tg.messages(USER).is_empty(), "nothing went elsewhere");
    let audit = std::fs::read_to_string(env.orchestrator().join("logs/audit.log")).unwrap();
    assert_eq!(audit.matches("telegram.chat_refused").count(), 1, "{audit}");
    assert_eq!(
        audit.matches("telegram.access_denied").count(),
        1,
        "{audit}"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_pollers_live_state() {
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&telegram_config(&tg, ""));
    let d = start(&env);
    say(&tg, "/help", "TeleVibeCode").await;
    let addr = d.addr();
    let telegram =
        || json(&http_get(addr, "/health/ready").unwrap().1)["checks"]["telegram"].clone();
    // Probes in a burst, some at the same time: they read what the poller saw and cost Telegram nothing.
    let get_me = tg.calls_of("getMe").len();
    let bursts: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| http_get(addr, "/health/ready").unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for b in bursts {
        for (code, body) in b.join().unwrap() {
            assert_eq!(code, 200, "{body}");
            assert_eq!(json(&body)["checks"]["telegram"], "ok");
        }
    }
    let mcp = Mcp::connect(&env).await;
    let health = mcp.call("get_health", json!({})).await.unwrap();
    assert_eq!(health["readiness"]["checks"]["telegram"], "ok");
    assert_eq!(tg.calls_of("getMe").len(), get_me, "no getMe for 21 probes");
    // The network goes: the poll in progress fails, and readiness says so at once (not 30 s later).
    tg.set_down(true);
    let down = Instant::now();
    until(
        Duration::from_secs(10),
        "readiness reports the outage",
        || telegram().as_str().is_some_and(|t| t.starts_with("failed")),
    )
    .await;
    eprintln!(
        "readiness failed {:?} after the network went",
        down.elapsed()
    );
    let (code, _) = http_get(addr, "/health/ready").unwrap();
    assert_eq!(code, 503);
    // Back: the poller's next good call makes it ready again.
    tg.set_down(false);
    until(Duration::from_secs(20), "ready again", || {
        telegram() == "ok"
    })
    .await;
    say(&tg, "/help", "TeleVibeCode").await;
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_poller_is_a_conflict_not_an_outage() {
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&telegram_config(&tg, ""));
    let d = start(&env);
    say(&tg, "/help", "TeleVibeCode").await;
    let conflicts = |tg: &FakeTelegram| {
        tg.calls_of("getUpdates")
            .iter()
            .filter(|c| c.error == Some(409))
            .count()
    };
    // While the daemon's long poll is in progress, another instance polls with the same token.
    until(Duration::from_secs(10), "a long poll in progress", || {
        tg.arrived("getUpdates").len() > tg.calls_of("getUpdates").len()
    })
    .await;
    tg.foreign_poll();
    until(
        Duration::from_secs(10),
        "the daemon's poll ended with 409",
        || conflicts(&tg) == 1,
    )
    .await;
    until(Duration::from_secs(10), "the conflict is logged", || {
        d.stderr_text()
            .contains("another process is polling with this bot token")
    })
    .await;
    // Not an outage: the breaker stays closed and the bot keeps answering.
    say(&tg, "/help", "TeleVibeCode").await;
    assert_eq!(
        d.metric("televibe_circuit_breaker_state{name=\"telegram_api\"}"),
        Some(1.0)
    );
    tg.assert_never_flood_limited();
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_button_and_reply_from_the_phone() {
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&telegram_config(
        &tg,
        &format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n"),
    ));
    make_repo(&env.root().join("repos/app"));
    make_repo(&env.root().join("repos/lib"));
    let d = start(&env);
    say(&tg, "/start", "TeleVibeCode").await;
    say(&tg, "/scan", "<b>Scan</b>: 2 registered").await;
    say(&tg, "/new app", "Session <b>S1</b>").await;
    say(&tg, "/new lib", "Session <b>S2</b>").await;
    say(&tg, "/sessions", "<b>Sessions</b>").await;
    let listing = texts(&tg).pop().unwrap();
    assert!(
        listing.contains("S1") && listing.contains("S2"),
        "{listing}"
    );
    say(&tg, "/approvals", "No pending approvals.").await;
    say(&tg, "/health", "<b>Health</b>: ready").await;

    // A plain reply to the message about S1 runs in S1, although S2 is the active session: the reply carries
    // the text the user sees ("Session S1"), not the HTML the bot sent.
    let about_s1 = tg
        .messages(USER)
        .into_iter()
        .find(|m| m.text.contains("Session <b>S1</b>"))
        .unwrap();
    tg.send_text_reply(USER, "quick one", Some(about_s1.message_id));
    let mcp = Mcp::connect(&env).await;
    let jobs_of = |s: &'static str| {
        let mcp = &mcp;
        async move {
            mcp.call("list_jobs", json!({"session_id": s}))
                .await
                .unwrap()["jobs"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    until_async(Duration::from_secs(20), "the reply ran in S1", || async {
        jobs_of("S1").await.len() == 1
    })
    .await;
    assert!(
        jobs_of("S2").await.is_empty(),
        "nothing ran in the active S2"
    );
    until(Duration::from_secs(20), "its tracker is done", || {
        tracker(&tg, "✅").is_some()
    })
    .await;
    let done = tracker(&tg, "✅").unwrap();

    // The Log and Diff buttons of a finished job.
    let button = |m: &crate::fake_telegram::Sent, prefix: &str| {
        m.markup["inline_keyboard"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter())
            .filter_map(|b| b["callback_data"].as_str())
            .find(|d| d.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} button in {}", m.markup))
            .to_string()
    };
    let log = tg.tap(USER, USER, done.message_id, &button(&done, "log:"));
    until(Duration::from_secs(20), "the log is sent", || {
        texts(&tg).iter().any(|t| t.contains("Log of job"))
            && tg
                .answered_callbacks()
                .iter()
                .any(|(id, t)| *id == log && t == "Log sent")
    })
    .await;
    let diff = tg.tap(USER, USER, done.message_id, &button(&done, "diff:"));
    until(Duration::from_secs(20), "the diff is sent", || {
        texts(&tg).iter().any(|t| t.contains("Changes of S1"))
            && tg
                .answered_callbacks()
                .iter()
                .any(|(id, t)| *id == diff && t == "Diff sent")
    })
    .await;

    // /use, /job and /cancel on the active session's latest job; its tracker message was deleted by the user,
    // so the final state arrives in a new message.
    say(&tg, "/use S1", "Active session: <b>S1</b>").await;
    tg.send_text(USER, "/run slow");
    until(Duration::from_secs(20), "a running tracker", || {
        tracker(&tg, "⚙️").is_some()
    })
    .await;
    let running = tracker(&tg, "⚙️").unwrap();
    say(&tg, "/job", "status: <b>running</b>").await;
    tg.delete_message(USER, running.message_id);
    say(&tg, "/cancel", "Cancel requested").await;
    until(
        Duration::from_secs(20),
        "the canceled job's tracker, sent again",
        || {
            tg.messages(USER).iter().any(|m| {
                m.message_id > running.message_id
                    && m.text.contains("<b>Job ")
                    && m.text.contains("🚫")
            })
        },
    )
    .await;
    say(&tg, "/job", "status: <b>canceled</b>").await;
    tg.assert_never_flood_limited();

    // The user blocks the bot: the answer is refused with 403 and dropped, not retried forever.
    tg.block(USER);
    tg.send_text(USER, "/help");
    let refused = |tg: &FakeTelegram| {
        tg.calls_of("sendMessage")
            .iter()
            .filter(|c| c.error == Some(403))
            .count()
    };
    until(
        Duration::from_secs(20),
        "the answer refused with 403",
        || refused(&tg) == 1,
    )
    .await;
    until(Duration::from_secs(20), "the refusal is logged", || {
        d.stderr_text()
            .contains("message refused by Telegram; dropped")
    })
    .await;
    // Updates are handled in order; once a later command was handled and its answer refused too, the first
    // was not tried again.
    tg.send_text(USER, "/health");
    until(Duration::from_secs(20), "the next answer refused", || {
        refused(&tg) >= 2
    })
    .await;
    settled(&env, &d).await;
    assert_eq!(refused(&tg), 2, "each refused answer was tried once");
    drop(d);
}

#[tokio::test]
async fn a_graceful_stop_sends_the_replies_still_queued() {
    // Command replies are outbox rows: a stop that did not drain the queue would leave them to the next start,
    // later than the person expects. Pacing keeps them queued when the stop comes; the drain sends them.
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&telegram_config(&tg, ""));
    let d = start(&env);
    say(&tg, "/start", "TeleVibeCode").await;
    let before = tg.messages(USER).len();
    for command in ["/projects", "/sessions", "/approvals"] {
        tg.send_text(USER, command);
    }
    // Each update is confirmed by the poll after it was handled, so its reply is queued by then.
    until(
        Duration::from_secs(20),
        "all three commands handled",
        || tg.pending_updates() == 0,
    )
    .await;
    let sent_before_stop = tg.messages(USER).len() - before;
    assert!(
        sent_before_stop < 3,
        "pacing should hold replies back when the stop comes ({sent_before_stop} already sent)"
    );
    // The fake Bot API runs on this test's runtime: wait for the exit off it, so it keeps answering.
    let status = tokio::task::spawn_blocking(move || d.stop()).await.unwrap();
    assert!(status.success(), "{status:?}");
    let replies: Vec<String> = texts(&tg).split_off(before);
    for expect in [
        "<b>Projects</b>",
        "<b>Sessions</b>",
        "No pending approvals.",
    ] {
        assert!(
            replies.iter().any(|r| r.contains(expect)),
            "{expect:?} was not delivered before the daemon exited: {replies:#?}"
        );
    }
    tg.assert_never_flood_limited();
}

/// The daemon's peak resident memory so far (`VmHWM`), in MiB.
fn peak_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_diff_of_a_huge_change_is_refused_not_read_whole() {
    let tg = FakeTelegram::start().await;
    let env = Env::new(&telegram_config(&tg, ""));
    let d = start(&env);
    let mcp = Mcp::connect(&env).await;
    let wt = crate::jobs::session(&env, &mcp).await;
    // 150 MB of change in a tracked file, as a job could leave it.
    let line = "x".repeat(99) + "\n";
    std::fs::write(wt.join("README.md"), line.repeat(1_500_000)).unwrap();
    let before = peak_mib(d.child.id());
    say(&tg, "/diff S1", "larger than 8 MiB").await;
    let after = peak_mib(d.child.id());
    // A figure, not a limit: what the daemon's peak memory did while it refused the diff.
    eprintln!("peak resident memory: {before:.1} MiB before /diff of 150 MB, {after:.1} MiB after");
    // A small change is sent as before.
    std::fs::write(wt.join("README.md"), "changed\n").unwrap();
    say(&tg, "/diff S1", "Changes of S1").await;
}

//! Restarts of the notifier, telegram, backup and breakers actors (the failure drill `admin panic`): each
//! comes back, and does its work afterwards with nothing lost or done twice.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_telegram::{FakeTelegram, TOKEN};
use crate::harness::*;
use crate::jobs::{run, wait_final};

const USER: i64 = 4242;
const FAKE_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh");

/// The tree's entry for the root's child `name`, or `None` while the socket itself does not answer.
fn child(env: &Env, name: &str) -> Option<Value> {
    let out = env.run(&["admin", "tree", "--json"]);
    if !out.status.success() {
        return None;
    }
    let tree = json(&String::from_utf8_lossy(&out.stdout));
    tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

/// Panics `name` and waits until it runs again after its `round`-th restart.
fn panic_and_wait(env: &Env, name: &str, round: u64) {
    let out = env.run(&["admin", "panic", name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        Duration::from_secs(20),
        &format!("{name} restarted"),
        || child(env, name).is_some_and(|c| c["restarts"] == round && c["status"] == "running"),
    );
}

fn telegram_env(extra: &str) -> (Env, String) {
    let env = Env::new("");
    make_repo(&env.root().join("repos/app"));
    let config =
        format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n{extra}");
    (env, config)
}

fn start_with_bot(env: &Env) -> Daemon {
    env.start_with(|c| {
        c.env("TELEVIBE_TELEGRAM__TOKEN", TOKEN);
    })
}

/// Sends `text` and waits for a reply containing `expect`.
async fn say(tg: &FakeTelegram, text: &str, expect: &str) {
    tg.say(USER, text, expect, Duration::from_secs(20)).await;
}

fn messages_with(tg: &FakeTelegram, needle: &str) -> usize {
    tg.messages(USER)
        .iter()
        .filter(|m| m.text.contains(needle))
        .count()
}

/// A job that ends while the notifier is down (its restart waits out an 8 s backoff) is shown once the
/// notifier is back: one tracker, final, and no message twice; replies flow again after the restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_notifier_delivers_what_happened_while_it_was_down_once() {
    let tg = FakeTelegram::start().await;
    let (env, config) =
        telegram_env("[supervision]\nbackoff_initial_ms = 8000\nbackoff_max_ms = 8000\n");
    env.write_config(&format!(
        "[telegram]\napi_url = \"{}\"\nallowed_users = [{USER}]\n{config}",
        tg.url()
    ));
    let d = start_with_bot(&env);
    say(&tg, "/register app", "Registered").await;
    say(&tg, "/new app", "Session <b>S1</b>").await;
    let mcp = Mcp::connect(&env).await;

    assert!(env.run(&["admin", "panic", "notifier"]).status.success());
    eventually(Duration::from_secs(10), "the notifier down", || {
        child(&env, "notifier").is_some_and(|c| c["status"] != "running")
    });
    let marker = "while-the-notifier-was-down";
    let job = run(&mcp, "S1", marker).await;
    assert_eq!(
        wait_final(&mcp, &job, Duration::from_secs(30)).await["status"],
        "done"
    );
    let notifier = child(&env, "notifier").unwrap();
    assert_ne!(
        notifier["status"], "running",
        "the job ended while the notifier was down: {notifier}"
    );
    assert_eq!(messages_with(&tg, marker), 0, "nothing sent while down");

    eventually(Duration::from_secs(20), "the notifier back", || {
        child(&env, "notifier").is_some_and(|c| c["restarts"] == 1 && c["status"] == "running")
    });
    until(Duration::from_secs(20), "the job's tracker, final", || {
        tg.messages(USER)
            .iter()
            .any(|m| m.text.contains(marker) && m.text.contains("✅"))
    })
    .await;
    // A reply after the restart goes out, and by then (same chat, in order) anything sent twice would be
    // there too.
    say(&tg, "/jobs", marker).await;
    let trackers: Vec<_> = tg
        .messages(USER)
        .into_iter()
        .filter(|m| m.text.contains("<b>Job ") && m.text.contains(marker))
        .collect();
    assert_eq!(trackers.len(), 1, "one tracker for the job: {trackers:#?}");
    let store = env.store_read_only().await;
    let events = store.events_of_job(&job).await.unwrap();
    store.close().await;
    assert!(
        events.iter().any(|(t, _)| t == "job.completed"),
        "{events:?}"
    );
    tg.assert_never_flood_limited();
    tg.assert_edits_paced();
    drop(mcp);
    assert!(d.stop().success());
}

/// A restarted telegram actor polls on from the stored offset: commands are answered again, and the
/// command before the restart is not handled a second time.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_telegram_actor_answers_again_and_handles_no_update_twice() {
    let tg = FakeTelegram::start().await;
    let (env, config) = telegram_env("");
    env.write_config(&format!(
        "[telegram]\napi_url = \"{}\"\nallowed_users = [{USER}]\n{config}",
        tg.url()
    ));
    let d = start_with_bot(&env);
    say(&tg, "/help", "TeleVibeCode").await;
    let set_commands = tg.calls_of("setMyCommands").len();

    panic_and_wait(&env, "telegram", 1);
    // Handled in order: once /register is answered, a second /help would have been answered before it.
    say(&tg, "/register app", "Registered").await;
    assert_eq!(messages_with(&tg, "TeleVibeCode"), 1, "/help answered once");
    assert!(
        tg.calls_of("setMyCommands").len() > set_commands,
        "the restarted front set its commands again"
    );
    let (code, body) = d.get("/health/ready");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["checks"]["telegram"], "ok");
    let restarts = d
        .metric("televibe_actor_restarts_total{actor=\"telegram\"}")
        .unwrap();
    assert_eq!(restarts, 1.0);
    tg.assert_never_flood_limited();
    assert!(d.stop().success());
}

/// A restarted backup actor still makes verified backups on request.
#[test]
fn a_restarted_backup_actor_still_backs_up() {
    if !crate::pg::sqlite_only(
        "backups copy SQLite's state.db; a PostgreSQL store's backups are the operator's own",
    ) {
        return;
    }
    let env = Env::new("");
    let d = env.start();
    panic_and_wait(&env, "backup", 1);
    let before: Vec<_> = std::fs::read_dir(env.orchestrator().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let out = env.run(&["backup", "now", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let taken = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(taken["verified"], true, "{taken}");
    let path = std::path::PathBuf::from(taken["path"].as_str().unwrap());
    assert!(path.is_file(), "{taken}");
    assert!(
        !before.contains(&path.file_name().unwrap().to_os_string()),
        "a new file: {taken}"
    );
    assert_eq!(
        d.metric("televibe_actor_restarts_total{actor=\"backup\"}"),
        Some(1.0)
    );
    assert!(d.stop().success());
}

fn claude_code_state(env: &Env) -> String {
    let out = env.run(&["admin", "breakers", "--json"]);
    assert!(out.status.success());
    let b = json(&String::from_utf8_lossy(&out.stdout));
    b["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "claude_code")
        .unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn opened_notices(env: &Env) -> u64 {
    let store = env.store_read_only().await;
    let n = store.reader_count_events("breaker.opened").await.unwrap();
    store.close().await;
    n
}

/// A restarted breakers actor does not notify an opening twice, still reports the breakers, and tells
/// of the next opening; the breaker still goes open → half-open → closed.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_breakers_actor_keeps_the_state_and_tells_of_the_next_opening() {
    let env = Env::new(&format!(
        "[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n\
         [breakers.claude_code]\nfailure_threshold = 1\nsuccess_threshold = 1\ntimeout_seconds = 3\nhalf_open_requests = 1\n"
    ));
    // The actor notices an opening at its 1 s tick, so the breaker stays open longer than that.
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    crate::jobs::session(&env, &mcp).await;
    // One failure opens claude_code; the actor's tick records the notice.
    let crashed = run(&mcp, "S1", "crash").await;
    assert_eq!(
        wait_final(&mcp, &crashed, Duration::from_secs(30)).await["status"],
        "failed"
    );
    until_async(
        Duration::from_secs(10),
        "the breaker.opened notice",
        || async { opened_notices(&env).await == 1 },
    )
    .await;

    panic_and_wait(&env, "breakers", 1);
    assert!(
        ["open", "half_open"].contains(&claude_code_state(&env).as_str()),
        "{}",
        claude_code_state(&env)
    );
    // Half-open after its timeout, the next job is the probe and its success closes it.
    let ok = run(&mcp, "S1", "fine").await;
    assert_eq!(
        wait_final(&mcp, &ok, Duration::from_secs(30)).await["status"],
        "done"
    );
    assert_eq!(claude_code_state(&env), "closed");
    assert_eq!(
        d.metric("televibe_circuit_breaker_state{name=\"claude_code\"}"),
        Some(1.0)
    );
    // The breaker was closed meanwhile, so a second notice for the first opening would be there by now.
    assert_eq!(opened_notices(&env).await, 1, "the opening notified once");
    // The restarted actor tells of the next opening.
    let crashed = run(&mcp, "S1", "crash").await;
    wait_final(&mcp, &crashed, Duration::from_secs(30)).await;
    until_async(
        Duration::from_secs(10),
        "a notice of the second opening",
        || async { opened_notices(&env).await == 2 },
    )
    .await;
    assert_eq!(
        mcp.call("get_health", json!({})).await.unwrap()["breakers"]
            .as_array()
            .unwrap()
            .len(),
        6,
        "every breaker still reported"
    );
    drop(mcp);
    assert!(d.stop().success());
}

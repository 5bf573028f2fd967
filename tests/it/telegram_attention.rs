//! Notifications that respect attention, checked against the calls the fake Bot API recorded: progress goes
//! silently, what needs the person rings the phone (an approval request, its one reminder, a job's result);
//! `/verbosity full|compact|final` chooses what a chat sees of a running job.

use std::time::Duration;

use serde_json::json;

use crate::fake_telegram::{Call, FakeTelegram, Sent};
use crate::harness::*;
use crate::jobs::{wait_final, wait_status};
use crate::telegram::{FAKE_AGENT, USER, say, start, telegram_config};

async fn setup(tg: &FakeTelegram, extra: &str) -> (Env, Daemon) {
    let env = Env::new("");
    env.write_config(&telegram_config(
        tg,
        &format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n{extra}"),
    ));
    make_repo(&env.root().join("repos/app"));
    let d = start(&env);
    say(tg, "/register app", "Registered").await;
    say(tg, "/new app", "Session <b>S1</b>").await;
    (env, d)
}

async fn run(mcp: &Mcp, session: &str, instruction: &str) -> String {
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

/// Runs `instruction` in S1 behind a job that holds the session until the tracker of the queued job is
/// out (so a tracker shows before the job ends, however fast it runs), then cancels the holder. Answers
/// (holder, job).
async fn run_held(tg: &FakeTelegram, mcp: &Mcp, instruction: &str) -> (String, String) {
    let hold = run(mcp, "S1", "hang").await;
    let job = run(mcp, "S1", instruction).await;
    until(Duration::from_secs(30), "the queued job's tracker", || {
        !trackers(tg, &job).is_empty()
    })
    .await;
    mcp.call("cancel_job", json!({"job_id": hold}))
        .await
        .unwrap();
    assert_eq!(
        wait_final(mcp, &hold, Duration::from_secs(30)).await["status"],
        "canceled"
    );
    (hold, job)
}

fn head(id: &str) -> String {
    format!("<b>Job {}</b>", &id[..8])
}

/// The calls that showed a job's tracker (its messages and their edits), answered, oldest first.
fn tracker_calls(tg: &FakeTelegram, id: &str) -> Vec<Call> {
    tg.calls()
        .into_iter()
        .filter(|c| c.error.is_none())
        .filter(|c| c.method == "sendmessage" || c.method == "editmessagetext")
        .filter(|c| c.text().contains(&head(id)))
        .collect()
}

/// The messages the user sees that show a job's tracker.
fn trackers(tg: &FakeTelegram, id: &str) -> Vec<Sent> {
    tg.messages(USER)
        .into_iter()
        .filter(|m| m.text.contains(&head(id)))
        .collect()
}

async fn shown_final(tg: &FakeTelegram, id: &str, icon: &str) -> Sent {
    until(
        Duration::from_secs(60),
        &format!("job {id} shown {icon}"),
        || trackers(tg, id).iter().any(|m| m.text.contains(icon)),
    )
    .await;
    trackers(tg, id)
        .into_iter()
        .find(|m| m.text.contains(icon))
        .unwrap()
}

/// The answered `sendMessage` calls whose text contains `needle`.
fn sends_with(tg: &FakeTelegram, needle: &str) -> Vec<Call> {
    tg.calls_of("sendMessage")
        .into_iter()
        .filter(|c| c.error.is_none() && c.text().contains(needle))
        .collect()
}

/// The tool lines of `full` ("💻 Bash <code>echo step 3</code> ✓"): none in `compact` or `final`.
fn has_tool_line(text: &str) -> bool {
    text.contains("💻 Bash <code>")
}

/// A job's one final message: sent once, notifying, and the only message showing the job.
fn one_notifying_result(tg: &FakeTelegram, id: &str, icon: &str) -> Call {
    let finals: Vec<Call> = tracker_calls(tg, id)
        .into_iter()
        .filter(|c| c.text().contains(icon))
        .collect();
    assert_eq!(
        finals.len(),
        1,
        "job {id}: one call shows its end: {finals:#?}"
    );
    let result = finals[0].clone();
    assert_eq!(result.method, "sendmessage", "the result is a new message");
    assert_eq!(result.notifies(), Some(true), "the result notifies");
    let shown = trackers(tg, id);
    assert_eq!(shown.len(), 1, "one message shows the job: {shown:#?}");
    assert!(shown[0].text.contains(icon), "{}", shown[0].text);
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_is_silent_and_results_approvals_and_replies_notify() {
    let tg = FakeTelegram::start().await;
    let (env, d) = setup(&tg, "[jobs]\nkill_grace_secs = 1\n").await;
    // Replies answer what the person just did: they notify.
    let registered = sends_with(&tg, "Registered");
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].notifies(), Some(true));

    // `full` by default: the tracker is sent silently, edited with its tool lines, and the result goes out as
    // a new, notifying message; the progress message then points to it.
    let mcp = Mcp::connect(&env).await;
    let (hold, job) = run_held(&tg, &mcp, "chatty").await;
    assert_eq!(
        wait_final(&mcp, &job, Duration::from_secs(60)).await["status"],
        "done"
    );
    let result = shown_final(&tg, &job, "✅").await;
    shown_final(&tg, &hold, "🚫").await;
    one_notifying_result(&tg, &hold, "🚫");
    assert!(result.text.contains("chatty done"), "{}", result.text);
    let calls = tracker_calls(&tg, &job);
    let (first, _) = calls.split_first().unwrap();
    assert_eq!(first.method, "sendmessage");
    assert_eq!(
        first.notifies(),
        Some(false),
        "the tracker's first message is silent: {first:?}"
    );
    assert!(!first.text().contains("✅"), "{}", first.text());
    let progress: Vec<&Call> = calls.iter().filter(|c| !c.text().contains("✅")).collect();
    assert!(
        progress
            .iter()
            .filter(|c| c.method == "sendmessage")
            .all(|c| c.notifies() == Some(false)),
        "every progress message is silent: {progress:#?}"
    );
    assert!(
        progress.iter().any(|c| has_tool_line(c.text())) || has_tool_line(&result.text),
        "full lists the tool uses"
    );
    one_notifying_result(&tg, &job, "✅");
    let pointers: Vec<Sent> = tg
        .messages(USER)
        .into_iter()
        .filter(|m| m.text.contains("the result is in the message below"))
        .collect();
    assert_eq!(
        pointers.len(),
        2,
        "the holder's and the job's: {pointers:#?}"
    );
    assert!(pointers[0].text.contains("🚫"), "{}", pointers[0].text);
    let pointer = &pointers[1];
    assert!(
        pointer.message_id < result.message_id,
        "the progress message came first"
    );
    assert!(
        pointer.text.contains("✅")
            && pointer.text.contains("Session S1")
            && pointer.text.contains("the result is in the message below")
            && !pointer.text.contains("<b>Job "),
        "the progress message points to the result: {}",
        pointer.text
    );
    assert_eq!(
        pointer.markup["inline_keyboard"].as_array().map(Vec::len),
        Some(0),
        "no Cancel button left: {}",
        pointer.markup
    );

    // An approval request notifies; its job's progress stays silent; the result notifies.
    let asking = run(&mcp, "S1", "ask-approval").await;
    until(Duration::from_secs(30), "the approval request", || {
        !sends_with(&tg, "Approval needed").is_empty()
    })
    .await;
    let request = sends_with(&tg, "Approval needed").remove(0);
    assert_eq!(request.notifies(), Some(true), "{request:?}");
    let message = tg
        .messages(USER)
        .into_iter()
        .find(|m| m.text.contains("Approval needed"))
        .unwrap();
    let approve = message.markup["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .unwrap()
        .to_string();
    tg.tap(USER, USER, message.message_id, &approve);
    assert_eq!(
        wait_final(&mcp, &asking, Duration::from_secs(30)).await["status"],
        "done"
    );
    shown_final(&tg, &asking, "✅").await;
    settled(&env, &d).await;
    for c in tracker_calls(&tg, &asking)
        .iter()
        .filter(|c| c.method == "sendmessage" && !c.text().contains("✅"))
    {
        assert_eq!(c.notifies(), Some(false), "{c:?}");
    }
    one_notifying_result(&tg, &asking, "✅");
    // Edits never carry a notification of their own: they cannot ring a phone.
    assert!(
        tg.calls_of("editMessageText")
            .iter()
            .all(|c| c.disable_notification().is_none())
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn verbosity_chooses_what_a_chat_sees_of_a_running_job_and_outlives_a_restart() {
    let tg = FakeTelegram::start().await;
    let (env, d) = setup(&tg, "[jobs]\nkill_grace_secs = 1\n").await;
    // Announced with the other commands, and in /help.
    let announced = tg.calls_of("setMyCommands")[0].params["commands"].to_string();
    assert!(announced.contains("\"verbosity\""), "{announced}");
    say(&tg, "/help", "/verbosity full|compact|final").await;
    say(&tg, "/verbosity", "Progress in this chat: <b>full</b>").await;
    let shown = crate::telegram::texts(&tg).pop().unwrap();
    for mode in ["full", "compact", "final"] {
        assert!(shown.contains(&format!("<code>{mode}</code>")), "{shown}");
    }
    // A bad value is refused and changes nothing.
    say(&tg, "/verbosity loud", "Unknown verbosity").await;
    say(&tg, "/verbosity", "Progress in this chat: <b>full</b>").await;

    // compact: a tracker while the job runs, with counts and the last step instead of the tool lines.
    say(&tg, "/verbosity compact", "now <b>compact</b>").await;
    let mcp = Mcp::connect(&env).await;
    let (_, job) = run_held(&tg, &mcp, "chatty").await;
    wait_final(&mcp, &job, Duration::from_secs(60)).await;
    let result = shown_final(&tg, &job, "✅").await;
    let calls = tracker_calls(&tg, &job);
    assert!(calls.len() >= 2, "a tracker, then the result: {calls:#?}");
    assert_eq!(calls[0].method, "sendmessage");
    assert_eq!(calls[0].notifies(), Some(false));
    for c in &calls {
        assert!(
            !has_tool_line(c.text()),
            "compact shows no tool lines: {}",
            c.text()
        );
    }
    assert!(
        result
            .text
            .contains("120 steps · last: Bash <code>echo step 119</code>"),
        "{}",
        result.text
    );
    assert_eq!(
        result.text.matches("echo step").count(),
        1,
        "the last step only"
    );
    one_notifying_result(&tg, &job, "✅");

    // final: nothing of the job before its end, then the result alone, notifying; an approval request
    // still comes.
    say(&tg, "/verbosity final", "now <b>final</b>").await;
    // Queued behind a job that holds the session: in full or compact its tracker would show now.
    let hold = run(&mcp, "S1", "hang").await;
    let job = run(&mcp, "S1", "chatty").await;
    wait_status(&mcp, &hold, Duration::from_secs(30), |s| s == "running").await;
    // The outbox is read in order and one chat's messages go out in order: once this reply is out, a
    // tracker for either job would be too.
    say(&tg, "/help", "TeleVibeCode").await;
    assert!(trackers(&tg, &hold).is_empty() && trackers(&tg, &job).is_empty());
    mcp.call("cancel_job", json!({"job_id": hold}))
        .await
        .unwrap();
    wait_final(&mcp, &job, Duration::from_secs(60)).await;
    let result = shown_final(&tg, &job, "✅").await;
    let calls = tracker_calls(&tg, &job);
    assert_eq!(calls.len(), 1, "no tracker before the end: {calls:#?}");
    assert!(!has_tool_line(&result.text), "{}", result.text);
    one_notifying_result(&tg, &job, "✅");
    let asking = run(&mcp, "S1", "ask-approval").await;
    until(Duration::from_secs(30), "the approval request", || {
        !sends_with(&tg, "Approval needed").is_empty()
    })
    .await;
    assert_eq!(sends_with(&tg, "Approval needed")[0].notifies(), Some(true));
    assert!(
        tracker_calls(&tg, &asking).is_empty(),
        "the waiting job shows no tracker"
    );
    let pending = mcp.call("list_pending_approvals", json!({})).await.unwrap();
    let id = pending["approvals"][0]["id"].as_str().unwrap().to_string();
    mcp.call("approve", json!({"approval_id": id}))
        .await
        .unwrap();
    wait_final(&mcp, &asking, Duration::from_secs(30)).await;
    shown_final(&tg, &asking, "✅").await;
    one_notifying_result(&tg, &asking, "✅");

    // The choice is kept in SQLite: a restarted daemon still shows this chat nothing before the end.
    drop(mcp);
    assert!(d.stop().success());
    let d = start(&env);
    say(&tg, "/verbosity", "Progress in this chat: <b>final</b>").await;
    let mcp = Mcp::connect(&env).await;
    let job = run(&mcp, "S1", "quick one").await;
    wait_final(&mcp, &job, Duration::from_secs(30)).await;
    shown_final(&tg, &job, "✅").await;
    assert_eq!(tracker_calls(&tg, &job).len(), 1);
    one_notifying_result(&tg, &job, "✅");
    // A chat that leaves `final` while a job runs sees its tracker at once (silently); the result follows.
    let hold = run(&mcp, "S1", "hang").await;
    wait_status(&mcp, &hold, Duration::from_secs(30), |s| s == "running").await;
    say(&tg, "/help", "TeleVibeCode").await;
    assert!(trackers(&tg, &hold).is_empty());
    say(&tg, "/verbosity full", "now <b>full</b>").await;
    until(Duration::from_secs(20), "the running job's tracker", || {
        trackers(&tg, &hold).iter().any(|m| m.text.contains("⚙️"))
    })
    .await;
    assert_eq!(tracker_calls(&tg, &hold)[0].notifies(), Some(false));
    mcp.call("cancel_job", json!({"job_id": hold}))
        .await
        .unwrap();
    shown_final(&tg, &hold, "🚫").await;
    one_notifying_result(&tg, &hold, "🚫");
    // And in full the tracker is sent (silently) before the result again, with its tool lines.
    let (_, job) = run_held(&tg, &mcp, "chatty").await;
    wait_final(&mcp, &job, Duration::from_secs(60)).await;
    let result = shown_final(&tg, &job, "✅").await;
    let calls = tracker_calls(&tg, &job);
    assert!(calls.len() >= 2, "{calls:#?}");
    assert_eq!(calls[0].notifies(), Some(false));
    assert!(has_tool_line(&result.text), "{}", result.text);
    one_notifying_result(&tg, &job, "✅");
    drop(d);
}

/// Messages reminding of the request shown in message `request`.
fn reminders_of(tg: &FakeTelegram, request: i64) -> Vec<Call> {
    sends_with(tg, "Still waiting for your decision")
        .into_iter()
        .filter(|c| c.reply_to() == Some(request))
        .collect()
}

/// The id of job `job`'s pending approval request, as soon as it is asked.
async fn pending_of(mcp: &Mcp, job: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pending = mcp.call("list_pending_approvals", json!({})).await.unwrap();
        if let Some(a) = pending["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["job_id"] == job)
        {
            return a["id"].as_str().unwrap().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {job} asks nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first approval request of `session` shown after message `after`.
async fn request_message(tg: &FakeTelegram, session: &str, after: i64) -> Sent {
    let about = format!("Session {session}");
    let find = || {
        tg.messages(USER).into_iter().find(|m| {
            m.message_id > after && m.text.contains("Approval needed") && m.text.contains(&about)
        })
    };
    until(
        Duration::from_secs(30),
        &format!("the approval request of {session}"),
        || find().is_some(),
    )
    .await;
    find().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_approval_is_reminded_once_and_one_decided_in_time_never() {
    let tg = FakeTelegram::start().await;
    let (env, d) = setup(
        &tg,
        "[approvals]\nremind_after_secs = 6\ntimeout_secs = 600\n",
    )
    .await;
    say(&tg, "/new app", "Session <b>S2</b>").await;
    let mcp = Mcp::connect(&env).await;

    // A request nobody answers: reminded once, as a notifying reply to it, without buttons of its own.
    let waiting = run(&mcp, "S1", "ask-approval").await;
    let request = request_message(&tg, "S1", 0).await;
    until(Duration::from_secs(30), "the reminder", || {
        !reminders_of(&tg, request.message_id).is_empty()
    })
    .await;
    let reminder = reminders_of(&tg, request.message_id).remove(0);
    assert_eq!(reminder.notifies(), Some(true), "{reminder:?}");
    let text = reminder.text();
    assert!(
        text.contains("Session S1") && text.contains("Bash") && text.contains("echo asked"),
        "{text}"
    );
    let shown = tg
        .messages(USER)
        .into_iter()
        .find(|m| m.text.contains("Still waiting for your decision"))
        .unwrap();
    assert!(
        shown.markup.is_null() || shown.markup["inline_keyboard"].as_array().is_none(),
        "the decision is made on the request, which shows the whole input: {}",
        shown.markup
    );

    // Meanwhile another session's request is decided at once (as soon as it is asked, not when its
    // message arrives): it is never reminded.
    let decided = run(&mcp, "S2", "ask-approval").await;
    let id = pending_of(&mcp, &decided).await;
    mcp.call("approve", json!({"approval_id": id}))
        .await
        .unwrap();
    let decided_request = request_message(&tg, "S2", 0).await;
    assert_eq!(
        wait_final(&mcp, &decided, Duration::from_secs(30)).await["status"],
        "done"
    );
    // A later request in S2, left unanswered: once its reminder is out, the first one's would have been
    // (its time came earlier, and one chat's messages go out in order), and so would a second reminder
    // of the request still waiting in S1.
    let later = run(&mcp, "S2", "ask-approval").await;
    let later_request = request_message(&tg, "S2", decided_request.message_id).await;
    until(
        Duration::from_secs(30),
        "the later request's reminder",
        || !reminders_of(&tg, later_request.message_id).is_empty(),
    )
    .await;
    assert!(reminders_of(&tg, decided_request.message_id).is_empty());
    assert_eq!(reminders_of(&tg, request.message_id).len(), 1);

    // Decided after its reminder: nothing more comes for it.
    for job in [&waiting, &later] {
        let id = pending_of(&mcp, job).await;
        mcp.call("approve", json!({"approval_id": id}))
            .await
            .unwrap();
        assert_eq!(
            wait_final(&mcp, job, Duration::from_secs(30)).await["status"],
            "done"
        );
    }
    settled(&env, &d).await;
    let store = env.store_read_only().await;
    for (job, reminded) in [(&waiting, 1), (&later, 1)] {
        let events = store.events_of_job(job).await.unwrap();
        let n = events
            .iter()
            .filter(|(t, _)| t == "approval.reminded")
            .count();
        assert_eq!(n, reminded, "job {job}: {events:?}");
    }
    assert_eq!(reminders_of(&tg, request.message_id).len(), 1);
    assert_eq!(reminders_of(&tg, later_request.message_id).len(), 1);
    assert!(reminders_of(&tg, decided_request.message_id).is_empty());
    drop(d);
}

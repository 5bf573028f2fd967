//! The walk of one instruction from the phone: how many SQL statements the daemon runs from a Telegram
//! message to its delivered result (`actors.md`, "The walk", has the figures before and after the seams).

use std::time::Duration;

use crate::fake_telegram::FakeTelegram;
use crate::harness::*;
use crate::telegram::{FAKE_AGENT, USER, say, start, telegram_config, texts};

/// The statements the walk may take: 34 measured after the seams (43 before), with room for the background
/// (a janitor pass, a breaker probe) that may fall inside the walk, and still under the figure before.
const MOST_STATEMENTS: f64 = 42.0;

#[tokio::test(flavor = "multi_thread")]
async fn one_instruction_from_the_phone_takes_a_bounded_number_of_statements() {
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&telegram_config(
        &tg,
        &format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n"),
    ));
    make_repo(&env.root().join("repos/app"));
    let d = start(&env);
    say(&tg, "/start", "TeleVibeCode").await;
    say(&tg, "/scan", "<b>Scan</b>: 1 registered").await;
    say(&tg, "/new app", "Session <b>S1</b>").await;
    // Quiet first: the replies above are delivered and marked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let statements = || {
        d.metric("televibe_db_statements_total")
            .expect("the counter is exposed")
    };
    let before = statements();
    let sent = texts(&tg).len();
    tg.send_text(USER, "walk");
    until(Duration::from_secs(20), "the job's result is told", || {
        texts(&tg)[sent..].iter().any(|t| t.contains("✅"))
    })
    .await;
    // The result's delivery is marked after the send; give it a moment to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let walk = statements() - before;
    println!("walk: {walk} SQL statements from the phone's message to its delivered result");
    assert!(walk > 0.0, "the counter counts");
    assert!(
        walk <= MOST_STATEMENTS,
        "one instruction took {walk} statements (at most {MOST_STATEMENTS})"
    );
    d.stop();
}

//! `/pr` and MCP `open_pull_request` against a loopback fake of GitHub's REST API. The test project's
//! origin is `https://github.com/acme/widget.git`, never contacted: only the API address is the fake's.

use std::time::Duration;

use crate::fake_github::{FakeGitHub, GITHUB_TOKEN};
use crate::fake_telegram::{FakeTelegram, TOKEN};
use crate::harness::*;
use crate::telegram::{FAKE_AGENT, USER, say, telegram_config, texts};

const ORIGIN: &str = "https://github.com/acme/widget.git";

/// A daemon (GitHub token `token`, API at the fake) with project `app` whose origin is `origin`, and
/// session S1 active in the user's chat.
async fn with_session(
    gh: &FakeGitHub,
    origin: &str,
    token: Option<&str>,
) -> (FakeTelegram, Env, Daemon) {
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&telegram_config(
        &tg,
        &format!(
            "[agent]\ncommand = \"{FAKE_AGENT}\"\n[github]\napi_url = \"{}\"\n",
            gh.url()
        ),
    ));
    let repo = env.root().join("repos/app");
    make_repo(&repo);
    git(&repo, &["remote", "add", "origin", origin]);
    let d = env.start_with(|c| {
        c.env("TELEVIBE_TELEGRAM__TOKEN", TOKEN);
        if let Some(t) = token {
            c.env("TELEVIBE_GITHUB__TOKEN", t);
        }
    });
    say(&tg, "/register app", "Registered").await;
    say(&tg, "/new app", "Session <b>S1</b>").await;
    (tg, env, d)
}

/// Runs one instruction in S1 and waits for its result (its tracker shows `marker`).
async fn run_job(tg: &FakeTelegram, instruction: &str, marker: &str) {
    tg.send_text(USER, instruction);
    until(Duration::from_secs(30), "the job is done", || {
        tg.messages(USER)
            .iter()
            .any(|m| m.text.contains("✅ <b>Job ") && m.text.contains(marker))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_opens_a_pull_request_of_the_sessions_branch_and_tells_its_address() {
    let gh = FakeGitHub::start("acme/widget").await;
    let (tg, env, d) = with_session(&gh, ORIGIN, Some(GITHUB_TOKEN)).await;
    run_job(&tg, "fix the login page\nand say ok", "fix the login page").await;
    gh.push_branch("acme/widget", "televibe/S1");
    say(&tg, "/pr", "Pull request <b>#42</b>").await;
    let reply = texts(&tg).last().cloned().unwrap();
    assert!(
        reply.contains("https://github.com/acme/widget/pull/42")
            && reply.contains("<code>televibe/S1</code> → <code>main</code>")
            && reply.contains("fix the login page"),
        "{reply}"
    );
    let reqs = gh.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/repos/acme/widget/pulls")
    );
    assert_eq!(
        r.authorization.as_deref(),
        Some(&*format!("Bearer {GITHUB_TOKEN}"))
    );
    assert_eq!(r.accept.as_deref(), Some("application/vnd.github+json"));
    assert_eq!(r.api_version.as_deref(), Some("2022-11-28"));
    assert!(
        r.user_agent
            .as_deref()
            .is_some_and(|u| u.starts_with("televibe/")),
        "{r:?}"
    );
    assert_eq!(r.body["head"], "televibe/S1");
    assert_eq!(r.body["base"], "main");
    assert_eq!(
        r.body["title"], "fix the login page",
        "the first instruction's first line"
    );
    let body = r.body["body"].as_str().unwrap();
    assert!(
        body.contains("session S1") && body.contains("fix the login page (done)"),
        "{body}"
    );
    // Audited; the token is in no log.
    let audit = std::fs::read_to_string(env.orchestrator().join("logs/audit.log")).unwrap();
    let line = audit
        .lines()
        .find(|l| l.contains("session.pull_request"))
        .unwrap_or_else(|| panic!("no audit record: {audit}"));
    assert!(
        line.contains("acme/widget/pull/42") && line.contains("telegram:"),
        "{line}"
    );
    assert!(!audit.contains(GITHUB_TOKEN));
    assert!(
        !d.stderr_text().contains(GITHUB_TOKEN),
        "the token is never logged"
    );
    assert_eq!(gh.pulls()[0].3, "fix the login page");
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_tells_githubs_refusals_as_they_are() {
    let gh = FakeGitHub::start("acme/widget").await;
    let (tg, env, d) = with_session(&gh, ORIGIN, Some(GITHUB_TOKEN)).await;
    // Not pushed yet: GitHub says the head is invalid, and the answer says to push first.
    say(&tg, "/pr S1 My change", "FORGE_ERROR").await;
    let reply = texts(&tg).last().cloned().unwrap();
    assert!(
        reply.contains("head invalid") && reply.contains("/push S1"),
        "{reply}"
    );
    gh.push_branch("acme/widget", "televibe/S1");
    say(&tg, "/pr S1 My change", "Pull request <b>#42</b>").await;
    assert_eq!(gh.pulls()[0].3, "My change", "the title given");
    say(&tg, "/pr", "FORGE_ERROR").await;
    let reply = texts(&tg).last().cloned().unwrap();
    assert!(
        reply.contains("A pull request already exists for acme:televibe/S1."),
        "GitHub's own words: {reply}"
    );
    // The same through MCP.
    let mcp = Mcp::connect(&env).await;
    let e = mcp
        .refused(
            "open_pull_request",
            serde_json::json!({"session_id": "S1"}),
            "FORGE_ERROR",
        )
        .await;
    assert!(e.message.contains("already exists"), "{}", e.message);
    assert_eq!(gh.pulls().len(), 1);
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_without_a_token_says_how_to_set_one_and_asks_nothing() {
    let gh = FakeGitHub::start("acme/widget").await;
    let (tg, env, d) = with_session(&gh, ORIGIN, None).await;
    gh.push_branch("acme/widget", "televibe/S1");
    say(&tg, "/pr", "FORGE_ERROR").await;
    let reply = texts(&tg).last().cloned().unwrap();
    assert!(
        reply.contains("no GitHub token") && reply.contains("TELEVIBE_GITHUB__TOKEN"),
        "{reply}"
    );
    assert!(gh.requests().is_empty(), "no request without a token");
    drop(d);
    // A wrong token: GitHub's 401, told as such.
    let d = env.start_with(|c| {
        c.env("TELEVIBE_TELEGRAM__TOKEN", TOKEN);
        c.env("TELEVIBE_GITHUB__TOKEN", "ghp_wrong");
    });
    say(&tg, "/pr", "FORGE_ERROR").await;
    let reply = texts(&tg).last().cloned().unwrap();
    assert!(
        reply.contains("GitHub refused the token (401 Bad credentials)"),
        "{reply}"
    );
    assert_eq!(gh.requests().len(), 1);
    assert!(gh.pulls().is_empty());
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_on_an_origin_that_is_not_github_says_so_and_asks_nothing() {
    let gh = FakeGitHub::start("acme/widget").await;
    let bare = tempfile::tempdir().unwrap();
    git(bare.path(), &["init", "-q", "--bare"]);
    let origin = bare.path().display().to_string();
    let (tg, _env, d) = with_session(&gh, &origin, Some(GITHUB_TOKEN)).await;
    say(&tg, "/pr", "FORGE_ERROR").await;
    let reply = texts(&tg).last().cloned().unwrap();
    assert!(
        reply.contains("origin is not a GitHub repository"),
        "{reply}"
    );
    assert!(gh.requests().is_empty());
    drop(d);
}

//! OpenAI Codex as the daemon's second agent: the real pinned CLI (`codex app-server`) in the job's
//! sandbox against the loopback Responses API fake, through MCP and the phone: answers, approvals asked
//! on its stream and decided by a tap (Approve runs the command, Deny does not), its thread resumed, a
//! Claude Code job in the same session keeping its own conversation, and model API errors.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_openai::{FakeOpenAi, Reply, after_tool, last_user_text, text_of};
use crate::fake_telegram::FakeTelegram;
use crate::harness::*;
use crate::jobs::{run, wait_final};
use crate::telegram::{USER, say, start, telegram_config};

/// `[agents.codex]` pointed at the fake with a key (through the egress proxy, as in production), Codex's
/// own retries of the model API off so an error ends a turn at once.
pub(crate) fn codex_section(api: &FakeOpenAi, home: &Path) -> String {
    format!(
        "[agents.codex]\ncommand = \"{}\"\n\
         extra_args = [\"-c\", \"model=\\\"gpt-5.5\\\"\", \"-c\", \"model_providers.televibe.request_max_retries=0\", \"-c\", \"model_providers.televibe.stream_max_retries=0\"]\n\
         env = {{ OPENAI_BASE_URL = \"{}\", OPENAI_API_KEY = \"sk-test\", HOME = \"{}\" }}\n",
        codex_cli().display(),
        api.base_url(),
        home.display()
    )
}

fn home(env: &Env) -> std::path::PathBuf {
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    home
}

/// The keyword-driven model: `SAY_HI` → "hi"; `WRITE_HELLO` → a shell command writing hello.txt;
/// `WRITE_BYE` → one writing bye.txt; `PATCH_NOTE` → a file change adding note.txt; `LIST_FILES` →
/// `ls -la`; `PATCH_TWO` → one change adding two files; `WRITE_RULE <dir>` → a command writing an allow
/// rule into `<dir>`; `FAIL500` → a
/// server error; `STALL` → no answer ever; after a tool → "All done."; else it names the instruction it got.
fn model(req: &Value) -> Reply {
    let last = last_user_text(req);
    if after_tool(req) {
        Reply::text("All done.")
    } else if last.contains("SAY_HI") {
        Reply::text("hi")
    } else if last.contains("WRITE_HELLO") {
        Reply::exec("echo hello > hello.txt")
    } else if last.contains("WRITE_BYE") {
        Reply::exec("echo bye > bye.txt")
    } else if last.contains("PATCH_NOTE") {
        Reply::add_file("note.txt", "a note\n")
    } else if last.contains("LIST_FILES") {
        Reply::exec("ls -la")
    } else if last.contains("PATCH_TWO") {
        Reply::Patch(
            "*** Begin Patch\n*** Add File: one.txt\n+one\n*** Add File: two.txt\n+two\n*** End Patch\n"
                .into(),
        )
    } else if let Some(rule) = last.strip_prefix("WRITE_RULE ") {
        // A rule that would let `rm` run unasked in later jobs, written where Codex reads its rules.
        Reply::exec(&format!(
            "mkdir -p {rule} && echo 'prefix_rule(pattern=[\"rm\"], decision=\"allow\")' > {rule}/allow.rules"
        ))
    } else if last.contains("STALL") {
        Reply::Stall
    } else if last.contains("FAIL500") {
        Reply::error(500, "server_error", "the fake model is down")
    } else {
        Reply::text(&format!("answer to: {last}"))
    }
}

async fn pending_approval(mcp: &Mcp, job: &str) -> Value {
    until_async(Duration::from_secs(60), "an approval request", || async {
        mcp.call("list_pending_approvals", json!({})).await.unwrap()["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["job_id"] == job)
    })
    .await;
    mcp.call("list_pending_approvals", json!({})).await.unwrap()["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["job_id"] == job)
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_runs_codex_to_its_answer_asks_for_its_commands_and_resumes_its_thread() {
    let api = FakeOpenAi::start(model).await;
    let env = Env::new("");
    let home = home(&env);
    env.write_config(&codex_section(&api, &home));
    make_repo(&env.root().join("repos/app"));
    env.hand_over();
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    mcp.call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    let refused = mcp
        .refused(
            "create_session",
            json!({"project_id": "app", "agent": "gemini"}),
            "UNKNOWN_AGENT",
        )
        .await;
    assert!(
        refused.message.contains("claude, codex"),
        "the configured agents are listed: {}",
        refused.message
    );
    let s = mcp
        .call(
            "create_session",
            json!({"project_id": "app", "agent": "codex"}),
        )
        .await
        .unwrap();
    assert_eq!(s["agent"], "codex", "{s}");
    let wt = std::path::PathBuf::from(s["worktree_path"].as_str().unwrap());

    // SAY_HI: the answer, the agent named, the tokens counted.
    let q = mcp
        .call(
            "run_instruction",
            json!({"session_id": "S1", "instruction": "SAY_HI", "wait": true, "timeout_secs": 120}),
        )
        .await
        .unwrap();
    assert_eq!(q["status"], "done", "{q}");
    assert_eq!(q["result_text"], "hi", "{q}");
    assert_eq!(q["agent"], "codex", "{q}");
    assert!(q["input_tokens"].as_i64().unwrap_or(0) > 0, "{q}");
    // Through the egress proxy the key was put in by the daemon: the job held a placeholder.
    assert!(
        api.auths().iter().all(|a| a == "Bearer sk-test"),
        "{:?}",
        api.auths()
    );
    let thread = mcp
        .call("get_session", json!({"session_id": "S1"}))
        .await
        .unwrap()["conversations"]["codex"]
        .clone();
    assert!(thread.is_string(), "the thread id is kept: {thread}");

    // A command asks; approved over MCP it runs, in the worktree.
    let job = run(&mcp, "S1", "WRITE_HELLO").await;
    let a = pending_approval(&mcp, &job).await;
    assert_eq!(a["tool_name"], "shell", "{a}");
    assert_eq!(a["tool_input"]["command"], "echo hello > hello.txt", "{a}");
    assert_eq!(a["scope"], "shell", "{a}");
    let waiting = mcp.call("get_job", json!({"job_id": job})).await.unwrap();
    assert_eq!(waiting["status"], "waiting_approval", "{waiting}");
    mcp.call("approve", json!({"approval_id": a["id"]}))
        .await
        .unwrap();
    let j = wait_final(&mcp, &job, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!(j["result_text"], "All done.", "{j}");
    assert_eq!(
        std::fs::read_to_string(wt.join("hello.txt")).unwrap(),
        "hello\n"
    );
    assert!(
        j["files_changed"]
            .as_array()
            .unwrap()
            .contains(&json!("hello.txt")),
        "{j}"
    );

    // The file change asks too; denied, nothing is written and the turn still ends.
    let job = run(&mcp, "S1", "PATCH_NOTE").await;
    let a = pending_approval(&mcp, &job).await;
    assert_eq!(a["tool_name"], "apply_patch", "{a}");
    assert!(
        a["tool_input"]["file_path"]
            .as_str()
            .unwrap()
            .ends_with("note.txt"),
        "{a}"
    );
    mcp.call("deny", json!({"approval_id": a["id"]}))
        .await
        .unwrap();
    let j = wait_final(&mcp, &job, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "done", "{j}");
    assert!(!wt.join("note.txt").exists(), "a denied change is not made");

    // The thread resumed: the model saw the first instruction again in the later requests.
    let resumed = api
        .requests()
        .iter()
        .filter(|r| last_user_text(r).contains("PATCH_NOTE"))
        .all(|r| text_of(r).contains("SAY_HI"));
    assert!(
        resumed,
        "every PATCH_NOTE request carries the thread's start"
    );

    // A read-only command the policy allows needs nobody; the job's tokens are its own, not the thread's.
    let job = run(&mcp, "S1", "LIST_FILES").await;
    let j = wait_final(&mcp, &job, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!(
        (j["input_tokens"].as_i64(), j["output_tokens"].as_i64()),
        (Some(20), Some(10)),
        "two model requests of this job: {j}"
    );
    let audit = std::fs::read_to_string(env.orchestrator().join("logs/audit.log")).unwrap();
    assert!(
        audit.lines().map(json).any(|r| r["event"] == "job.approved"
            && r["actor"] == "policy"
            && r["job_id"] == job.as_str()
            && r["details"]["input"]
                .as_str()
                .unwrap_or("")
                .contains("ls -la")),
        "{audit}"
    );

    // One change of two files: no single path for a rule or grant, a person sees both.
    let job = run(&mcp, "S1", "PATCH_TWO").await;
    let a = pending_approval(&mcp, &job).await;
    assert!(a["tool_input"].get("file_path").is_none(), "{a}");
    assert_eq!(a["tool_input"]["paths"].as_array().unwrap().len(), 2, "{a}");
    mcp.call("approve", json!({"approval_id": a["id"]}))
        .await
        .unwrap();
    let j = wait_final(&mcp, &job, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "done", "{j}");
    assert!(wt.join("one.txt").exists() && wt.join("two.txt").exists());

    // A rule written where Codex reads its rules, even approved, never reaches the session's state.
    let rules = env.root().join("agents/app/S1.codex/rules");
    let job = run(&mcp, "S1", &format!("WRITE_RULE {}", rules.display())).await;
    let a = pending_approval(&mcp, &job).await;
    mcp.call("approve", json!({"approval_id": a["id"]}))
        .await
        .unwrap();
    let j = wait_final(&mcp, &job, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "done", "{j}");
    assert!(
        std::fs::read_dir(&rules).unwrap().next().is_none(),
        "the rules directory stays empty"
    );

    // An error of the model API fails the job as an API error and counts on the codex breaker alone.
    let job = run(&mcp, "S1", "FAIL500").await;
    let j = wait_final(&mcp, &job, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "failed", "{j}");
    assert_eq!(j["error_type"], "api_error", "{j}");
    let metrics = d.get("/metrics").1;
    assert!(
        metrics.contains("televibe_circuit_breaker_failures_total{name=\"codex\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("breaker"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The audit names the agent.
    let audit = std::fs::read_to_string(env.orchestrator().join("logs/audit.log")).unwrap();
    assert!(
        audit
            .lines()
            .map(json)
            .any(|r| r["event"] == "job.approved" && r["details"]["agent"] == "codex"),
        "{audit}"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn from_the_phone_codex_asks_the_tap_decides_and_claude_keeps_its_own_conversation() {
    let api = FakeOpenAi::start(model).await;
    let claude_model = crate::fake_model::FakeModel::start(|req| {
        let text = crate::fake_model::last_text_of(req);
        crate::fake_model::Reply::Text(if text.contains("CLAUDE_AGAIN") {
            "claude again".into()
        } else {
            "claude here".into()
        })
    })
    .await;
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    let home = home(&env);
    env.write_config(&telegram_config(
        &tg,
        &format!(
            "[agent]\ncommand = \"{}\"\nenv = {{ ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"sk-test\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", HOME = \"{}\" }}\n{}",
            claude_cli().display(),
            claude_model.url(),
            home.display(),
            codex_section(&api, &home)
        ),
    ));
    make_repo(&env.root().join("repos/app"));
    env.hand_over();
    let d = start(&env);
    let wt = env.root().join("workspaces/app/S1");
    say(&tg, "/register app", "Registered").await;
    say(&tg, "/new app", "Session <b>S1</b>").await;
    say(&tg, "/agent gemini", "claude, codex").await;
    say(&tg, "/agent codex", "now runs <code>codex</code>").await;
    say(&tg, "/sessions", "codex").await;

    // A Codex job asks for its command; Approve runs it.
    tg.send_text(USER, "WRITE_HELLO");
    let approval = |n: usize| {
        let tg = &tg;
        async move {
            until(Duration::from_secs(90), "an approval request", || {
                tg.messages(USER)
                    .iter()
                    .filter(|m| m.text.contains("Approval needed"))
                    .count()
                    >= n
            })
            .await;
            tg.messages(USER)
                .into_iter()
                .filter(|m| m.text.contains("Approval needed"))
                .nth(n - 1)
                .unwrap()
        }
    };
    let msg = approval(1).await;
    assert!(
        msg.text.contains("echo hello &gt; hello.txt") && msg.text.contains("shell"),
        "{}",
        msg.text
    );
    assert!(
        !wt.join("hello.txt").exists(),
        "nothing runs before the tap"
    );
    let button = |m: &crate::fake_telegram::Sent, i: usize| {
        m.markup["inline_keyboard"][0][i]["callback_data"]
            .as_str()
            .unwrap()
            .to_string()
    };
    tg.tap(USER, USER, msg.message_id, &button(&msg, 0));
    until(Duration::from_secs(90), "hello.txt is written", || {
        wt.join("hello.txt").exists()
    })
    .await;
    until(Duration::from_secs(60), "the tracker says done", || {
        tg.messages(USER).iter().any(|m| {
            m.text.contains("✅") && m.text.contains("WRITE_HELLO") && m.text.contains("codex")
        })
    })
    .await;

    // Deny: the command does not run.
    tg.send_text(USER, "WRITE_BYE");
    let msg = approval(2).await;
    tg.tap(USER, USER, msg.message_id, &button(&msg, 2));
    until(
        Duration::from_secs(90),
        "the WRITE_BYE tracker ends",
        || {
            tg.messages(USER).iter().any(|m| {
                m.text.contains("WRITE_BYE") && (m.text.contains("✅") || m.text.contains("❌"))
            })
        },
    )
    .await;
    assert!(!wt.join("bye.txt").exists(), "a denied command never runs");

    // /claude in the same session runs Claude Code; both conversations go on independently.
    tg.send_text(USER, "/claude CLAUDE_FIRST");
    until(Duration::from_secs(90), "Claude's answer", || {
        tg.messages(USER)
            .iter()
            .any(|m| m.text.contains("claude here") && m.text.contains("claude"))
    })
    .await;
    tg.send_text(USER, "/codex SAY_HI");
    tg.send_text(USER, "/claude CLAUDE_AGAIN");
    until(Duration::from_secs(120), "both later jobs end", || {
        let m = tg.messages(USER);
        m.iter().any(|m| m.text.contains("claude again"))
            && m.iter()
                .any(|m| m.text.contains("SAY_HI") && m.text.contains("✅"))
    })
    .await;
    let mcp = Mcp::connect(&env).await;
    let s = mcp
        .call("get_session", json!({"session_id": "S1"}))
        .await
        .unwrap();
    assert_eq!(s["agent"], "codex", "{s}");
    assert!(s["conversations"]["codex"].is_string(), "{s}");
    assert!(s["conversations"]["claude"].is_string(), "{s}");
    assert_ne!(s["conversations"]["codex"], s["conversations"]["claude"]);
    // Codex's resumed thread holds its earlier instruction and none of Claude's; Claude's likewise.
    let codex_hi = api
        .requests()
        .into_iter()
        .rfind(|r| last_user_text(r).contains("SAY_HI"))
        .unwrap();
    assert!(text_of(&codex_hi).contains("WRITE_HELLO"));
    assert!(!text_of(&codex_hi).contains("CLAUDE_FIRST"));
    let claude_again = claude_model
        .requests()
        .into_iter()
        .rfind(|r| crate::fake_model::text_of(r).contains("CLAUDE_AGAIN"))
        .unwrap();
    let claude_text = crate::fake_model::text_of(&claude_again);
    assert!(
        claude_text.contains("CLAUDE_FIRST"),
        "Claude resumed its own"
    );
    assert!(!claude_text.contains("WRITE_HELLO"), "and not Codex's");
    let jobs = mcp
        .call("list_jobs", json!({"session_id": "S1"}))
        .await
        .unwrap();
    let agents: Vec<(String, String)> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["instruction"].as_str().unwrap().to_string(),
                j["agent"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        agents.contains(&("CLAUDE_FIRST".into(), "claude".into()))
            && agents.contains(&("WRITE_HELLO".into(), "codex".into())),
        "{agents:?}"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_codex_job_is_found_hung_and_another_is_canceled() {
    let api = FakeOpenAi::start(model).await;
    let env = Env::new("");
    let home = home(&env);
    env.write_config(&format!(
        "[agent]\ndefault = \"codex\"\n{}[jobs]\nhang_timeout_secs = 5\nkill_grace_secs = 1\n",
        codex_section(&api, &home)
    ));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    // agent.default = "codex": a session opened without naming one runs Codex.
    crate::jobs::session(&env, &mcp).await;
    let hung = run(&mcp, "S1", "STALL first").await;
    let j = wait_final(&mcp, &hung, Duration::from_secs(90)).await;
    assert_eq!(
        (
            j["status"].as_str(),
            j["error_type"].as_str(),
            j["agent"].as_str()
        ),
        (Some("failed"), Some("hung"), Some("codex")),
        "{j}"
    );
    let stalled = run(&mcp, "S1", "STALL second").await;
    until_async(Duration::from_secs(60), "the model is asked", || async {
        api.requests()
            .iter()
            .any(|r| last_user_text(r).contains("STALL second"))
    })
    .await;
    // The job's Codex holds a placeholder, never the key (the egress proxy adds it).
    let key = codex_env(&stalled, "OPENAI_API_KEY").expect("the job's codex app-server process");
    assert!(key.starts_with("televibe-placeholder-"), "{key}");
    mcp.call("cancel_job", json!({"job_id": stalled}))
        .await
        .unwrap();
    let j = wait_final(&mcp, &stalled, Duration::from_secs(30)).await;
    assert_eq!(j["status"], "canceled", "{j}");
    until_session(&mcp, "S1", "idle").await;
    drop(d);
}

/// Variable `name` of job `job`'s `codex app-server` process, read from the host's `/proc`.
fn codex_env(job: &str, name: &str) -> Option<String> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = e.file_name().to_string_lossy().to_string();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if !args.iter().any(|a| *a == b"app-server") {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if vars.iter().any(|v| *v == format!("TELEVIBE_JOB_ID={job}")) {
            return vars
                .iter()
                .find_map(|v| v.strip_prefix(&format!("{name}=")).map(str::to_string));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_of_the_operators_own_in_extra_args_reaches_the_model_through_the_proxy() {
    // Codex pointed at its model the way its own documentation does it: a provider in `-c` overrides, the
    // key in its `env`. Inside the job's network namespace that address is reached through the relay.
    let api = FakeOpenAi::start(model).await;
    let env = Env::new("");
    let home = home(&env);
    let provider = [
        "model_provider=\\\"fake\\\"".to_string(),
        "model_providers.fake.name=\\\"fake\\\"".to_string(),
        format!("model_providers.fake.base_url=\\\"{}\\\"", api.base_url()),
        "model_providers.fake.wire_api=\\\"responses\\\"".to_string(),
        "model_providers.fake.env_key=\\\"OPENAI_API_KEY\\\"".to_string(),
        "model=\\\"gpt-5.5\\\"".to_string(),
    ];
    let extra: Vec<String> = provider
        .iter()
        .map(|p| format!("\"-c\", \"{p}\""))
        .collect();
    env.write_config(&format!(
        "[agent]\ndefault = \"codex\"\n[agents.codex]\ncommand = \"{}\"\nextra_args = [{}]\n\
         env = {{ OPENAI_API_KEY = \"sk-test\", HOME = \"{}\" }}\n",
        codex_cli().display(),
        extra.join(", "),
        home.display()
    ));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    crate::jobs::session(&env, &mcp).await;
    let q = mcp
        .call(
            "run_instruction",
            json!({"session_id": "S1", "instruction": "SAY_HI", "wait": true, "timeout_secs": 120}),
        )
        .await
        .unwrap();
    assert_eq!(
        (q["status"].as_str(), q["result_text"].as_str()),
        (Some("done"), Some("hi")),
        "{q}"
    );
    assert_eq!(api.auths(), ["Bearer sk-test"], "the proxy put the key in");
    drop(d);
}

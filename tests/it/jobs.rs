//! Jobs end to end: the real Claude Code CLI against the fake model API, and a scripted fake agent for the
//! cases the real CLI cannot be made to do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_model::{FakeModel, Reply, after_tool, last_text_of, text_of};
use crate::harness::*;

const FAKE_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh");

/// Registers `repos/app` and opens session S1.
pub(crate) async fn session(env: &Env, mcp: &Mcp) -> PathBuf {
    make_repo(&env.root().join("repos/app"));
    env.hand_over();
    let s = open_app_session(mcp).await;
    PathBuf::from(s["worktree_path"].as_str().unwrap())
}

/// Registers the repository already at `repos/app` and opens session S1: the session as `create_session`
/// answers it.
pub(crate) async fn open_app_session(mcp: &Mcp) -> Value {
    mcp.call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    mcp.call("create_session", json!({"project_id": "app"}))
        .await
        .unwrap()
}

pub(crate) async fn run(mcp: &Mcp, session: &str, instruction: &str) -> String {
    let q = mcp
        .call(
            "run_instruction",
            json!({"session_id": session, "instruction": instruction}),
        )
        .await
        .unwrap();
    q["id"].as_str().unwrap().to_string()
}

pub(crate) async fn wait_status(
    mcp: &Mcp,
    id: &str,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let j = mcp.call("get_job", json!({"job_id": id})).await.unwrap();
        if pred(j["status"].as_str().unwrap()) {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {} after {limit:?}: {j}",
            j["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn wait_final(mcp: &Mcp, id: &str, limit: Duration) -> Value {
    wait_status(mcp, id, limit, |s| {
        ["done", "failed", "canceled"].contains(&s)
    })
    .await
}

fn group_gone(job: &Value) -> bool {
    let pgid = job["pgid"].as_i64().unwrap() as i32;
    televibe::core::jobs::process::group_members(pgid).is_empty()
}

async fn events(env: &Env, job_id: &str) -> Vec<(String, Value)> {
    let store = env.store_read_only().await;
    let ev = store.events_of_job(job_id).await.unwrap();
    store.close().await;
    ev
}

/// The real CLI against the fake model, accepting edits, in a home of its own; `jobs` adds to `[jobs]`.
/// The real CLI, a fresh environment, a home directory for the CLI, and the path of `file` in the worktree
/// session S1 of project `app` will have.
fn real_claude_env(file: &str) -> (PathBuf, Env, PathBuf, String) {
    let claude = claude_cli();
    let env = Env::new("");
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let target = env
        .root()
        .join("workspaces/app/S1")
        .join(file)
        .display()
        .to_string();
    (claude, env, home, target)
}

pub(crate) fn real_claude_config(
    claude: &Path,
    model: &FakeModel,
    home: &Path,
    jobs: &str,
) -> String {
    format!(
        "[agent]\ncommand = \"{}\"\nextra_args = [\"--permission-mode\", \"acceptEdits\"]\n\
         env = {{ ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"sk-test\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", HOME = \"{}\" }}\n\
         [jobs]\nhard_timeout_secs = 120\n{jobs}",
        claude.display(),
        model.url(),
        home.display()
    )
}

fn fake_agent_config(extra: &str) -> String {
    format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n{extra}")
}

#[tokio::test(flavor = "multi_thread")]
async fn real_claude_code_runs_tools_resumes_and_reports_api_errors() {
    let (claude, env, home, target) = real_claude_env("hello.txt");
    let model = FakeModel::start(move |req| {
        if after_tool(req) {
            Reply::Text("Created hello.txt.".into())
        } else if text_of(req).contains("FAIL400") {
            Reply::Error {
                status: 400,
                kind: "invalid_request_error".into(),
                message: "fake invalid_request_error".into(),
            }
        } else if text_of(req).contains("second question") {
            Reply::Text("Second job done.".into())
        } else {
            Reply::ToolUse {
                name: "Write".into(),
                input: json!({"file_path": target, "content": "hello\n"}),
            }
        }
    })
    .await;
    env.write_config(&real_claude_config(&claude, &model, &home, ""));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    let wt = session(&env, &mcp).await;

    let first = run(&mcp, "S1", "create hello.txt please").await;
    let j1 = wait_final(&mcp, &first, Duration::from_secs(90)).await;
    assert_eq!(j1["status"], "done", "{j1}");
    assert_eq!(
        std::fs::read_to_string(wt.join("hello.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(j1["num_turns"], 2);
    assert!(
        j1["files_changed"]
            .as_array()
            .unwrap()
            .contains(&json!("hello.txt")),
        "{j1}"
    );
    assert!(
        j1["diff_stat"]
            .as_str()
            .unwrap()
            .contains("1 untracked file"),
        "{j1}"
    );
    assert_eq!(j1["result_text"], "Created hello.txt.");
    let kinds: Vec<String> = events(&env, &first)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        kinds,
        [
            "job.queued",
            "job.started",
            "job.tool_started",
            "job.tool_completed",
            "job.completed"
        ],
        "{kinds:?}"
    );
    let started = events(&env, &first)
        .await
        .into_iter()
        .find(|e| e.0 == "job.tool_started")
        .unwrap()
        .1;
    assert_eq!(started["tool"], "Write");
    let conv = mcp
        .call("get_session", json!({"session_id": "S1"}))
        .await
        .unwrap()["conversation_id"]
        .clone();
    assert!(conv.is_string(), "conversation id stored from system/init");

    // The second job resumes the conversation: the model sees the first instruction again.
    let second = run(&mcp, "S1", "second question").await;
    let j2 = wait_final(&mcp, &second, Duration::from_secs(90)).await;
    assert_eq!(j2["status"], "done", "{j2}");
    assert_eq!(j2["result_text"], "Second job done.");
    assert!(
        model
            .requests()
            .iter()
            .any(|r| text_of(r).contains("second question")
                && text_of(r).contains("create hello.txt please"))
    );

    let third = run(&mcp, "S1", "FAIL400 now").await;
    let j3 = wait_final(&mcp, &third, Duration::from_secs(90)).await;
    assert_eq!(
        (j3["status"].as_str(), j3["error_type"].as_str()),
        (Some("failed"), Some("api_error")),
        "{j3}"
    );
    assert_eq!(j3["api_error_status"], 400);
    assert_eq!(j3["exit_code"], 1);
    assert_eq!(
        d.metric("televibe_circuit_breaker_failures_total{name=\"claude_code\"}"),
        Some(1.0)
    );
    assert_eq!(
        d.metric("televibe_jobs_total{project_id=\"app\",status=\"done\"}"),
        Some(2.0)
    );
    assert_eq!(
        d.metric("televibe_jobs_total{project_id=\"app\",status=\"failed\"}"),
        Some(1.0)
    );
    assert_eq!(
        d.metric("televibe_job_duration_seconds_count{project_id=\"app\",status=\"done\"}"),
        Some(2.0)
    );

    let (_, metrics) = d.get("/metrics");
    let mut promtool = std::process::Command::new(required_tool(
        "promtool",
        "install the Debian package prometheus",
    ))
    .args(["check", "metrics"])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let short = &first[..8];
    assert_eq!(
        mcp.call("get_job", json!({"job_id": short})).await.unwrap()["id"],
        first.as_str()
    );
    let logs = mcp
        .call("get_job_logs", json!({"job_id": first, "lines": 3}))
        .await
        .unwrap();
    assert_eq!(logs["lines"].as_array().unwrap().len(), 3);
    assert_eq!(logs["truncated"], true);
    assert!(
        logs["lines"][2]
            .as_str()
            .unwrap()
            .contains("\"type\":\"result\""),
        "{logs}"
    );
    assert_eq!(
        mcp.call("list_jobs", json!({"session_id": "S1"}))
            .await
            .unwrap()["jobs"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_rules_and_validation() {
    let env = Env::new(&fake_agent_config("max_queued_per_session = 2"));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    mcp.refused(
        "run_instruction",
        json!({"session_id": "S1", "instruction": "  "}),
        "INSTRUCTION_EMPTY",
    )
    .await;
    mcp.refused(
        "run_instruction",
        json!({"session_id": "S1", "instruction": "x".repeat(10_001)}),
        "INSTRUCTION_TOO_LONG",
    )
    .await;
    mcp.refused(
        "run_instruction",
        json!({"session_id": "S9", "instruction": "hi"}),
        "SESSION_NOT_FOUND",
    )
    .await;
    let running = run(&mcp, "S1", "slow").await;
    wait_status(&mcp, &running, Duration::from_secs(10), |s| s == "running").await;
    let a = mcp
        .call(
            "run_instruction",
            json!({"session_id": "S1", "instruction": "first queued"}),
        )
        .await
        .unwrap();
    let b = mcp
        .call(
            "run_instruction",
            json!({"session_id": "S1", "instruction": "second queued"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (a["position"].as_i64(), b["position"].as_i64()),
        (Some(1), Some(2))
    );
    assert_eq!(a["status"], "queued");
    mcp.refused(
        "run_instruction",
        json!({"session_id": "S1", "instruction": "one too many"}),
        "QUEUE_FULL",
    )
    .await;
    assert_eq!(
        d.metric("televibe_jobs_active{project_id=\"app\"}"),
        Some(1.0)
    );
    assert!(
        d.metric(&format!(
            "televibe_job_start_timestamp{{job_id=\"{running}\"}}"
        ))
        .is_some()
    );
    let tree = json(&String::from_utf8_lossy(
        &env.run(&["admin", "tree", "--json"]).stdout,
    ));
    let sessions = tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sessions")
        .unwrap()
        .clone();
    let s1 = sessions["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "session:S1")
        .unwrap()
        .clone();
    assert_eq!(
        s1["children"][0]["name"],
        format!("job:{running}"),
        "{tree}"
    );
    assert_eq!(
        d.metric("televibe_job_queue_size{session_id=\"S1\"}"),
        Some(2.0)
    );
    // A queued job is canceled at once; the running one is stopped; the remaining one runs next.
    let c = mcp
        .call("cancel_job", json!({"job_id": a["id"]}))
        .await
        .unwrap();
    assert_eq!(c["status"], "canceled");
    mcp.call("cancel_job", json!({"job_id": running}))
        .await
        .unwrap();
    let stopped = wait_final(&mcp, &running, Duration::from_secs(10)).await;
    assert_eq!(stopped["status"], "canceled");
    let last = wait_final(&mcp, b["id"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(last["status"], "done", "{last}");
    assert_eq!(last["result_text"], "ok");
    assert_eq!(
        d.metric("televibe_job_queue_size{session_id=\"S1\"}"),
        Some(0.0)
    );
    assert_eq!(
        d.metric("televibe_jobs_active{project_id=\"app\"}"),
        Some(0.0)
    );
    assert!(
        d.metric(&format!(
            "televibe_job_start_timestamp{{job_id=\"{running}\"}}"
        ))
        .is_none()
    );
    mcp.refused("get_job", json!({"job_id": "nonexistent"}), "JOB_NOT_FOUND")
        .await;
    drop(d);
}

/// Runs `instruction` in S1 and waits for the job to fail `hung` with its processes gone.
async fn ends_hung(mcp: &Mcp, instruction: &str, limit: Duration) {
    let id = run(mcp, "S1", instruction).await;
    let j = wait_final(mcp, &id, limit).await;
    assert_eq!(
        (j["status"].as_str(), j["error_type"].as_str()),
        (Some("failed"), Some("hung")),
        "{j}"
    );
    assert!(group_gone(&j));
}

#[tokio::test(flavor = "multi_thread")]
async fn hang_without_output_or_cpu_is_killed() {
    let env = Env::new(&fake_agent_config("hang_timeout_secs = 2"));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    ends_hung(&mcp, "hang", Duration::from_secs(20)).await;
    until_session(&mcp, "S1", "idle").await;
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ignored_means_sigkill_after_grace_and_no_orphans() {
    let env = Env::new(&fake_agent_config(""));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    for instruction in ["ignore-term", "grandchildren"] {
        let id = run(&mcp, "S1", instruction).await;
        let running = wait_status(&mcp, &id, Duration::from_secs(10), |s| s == "running").await;
        let pgid = running["pgid"].as_i64().unwrap() as i32;
        eventually(Duration::from_secs(5), "agent processes up", || {
            televibe::core::jobs::process::group_members(pgid).len() >= 2
        });
        let asked = Instant::now();
        mcp.call("cancel_job", json!({"job_id": id})).await.unwrap();
        let j = wait_final(&mcp, &id, Duration::from_secs(15)).await;
        assert_eq!(j["status"], "canceled", "{j}");
        if instruction == "ignore-term" {
            assert!(
                asked.elapsed() >= Duration::from_millis(900),
                "SIGKILL only after the grace period"
            );
            assert_eq!(j["signal"], libc::SIGKILL);
        }
        assert!(
            group_gone(&j),
            "{instruction}: a process of the group survived"
        );
    }
    // A leader that exits leaving children behind: they go with it.
    let id = run(&mcp, "S1", "orphans").await;
    let j = wait_final(&mcp, &id, Duration::from_secs(10)).await;
    assert_eq!(j["status"], "done", "{j}");
    eventually(Duration::from_secs(5), "orphans killed", || group_gone(&j));
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn output_flood_is_capped_and_malformed_lines_survive() {
    // 2 MB of output against a 1 MiB log cap.
    let env = Env::new(&fake_agent_config("max_log_bytes = 1048576\n"));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    let id = run(&mcp, "S1", "flood").await;
    let j = wait_final(&mcp, &id, Duration::from_secs(120)).await;
    let log = PathBuf::from(j["log_path"].as_str().unwrap());
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size <= 1024 * 1024, "{size}");
    assert!(
        size > 1024 * 1024 - 2 * 65537,
        "filled up to the cap: {size}"
    );
    let logs = mcp
        .call("get_job_logs", json!({"job_id": id, "lines": 1}))
        .await
        .unwrap();
    assert_eq!(logs["log_capped"], true);
    assert_eq!(
        logs["lines"][0],
        televibe::core::jobs::log::TRUNCATION_MARKER
    );
    assert_eq!(j["status"], "failed", "no result event: {j}");
    assert!(
        j["error"].as_str().unwrap().contains("log truncated"),
        "{j}"
    );

    let id = run(&mcp, "S1", "malformed").await;
    let j = wait_final(&mcp, &id, Duration::from_secs(10)).await;
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!(j["result_text"], "survived");
    let text = std::fs::read_to_string(j["log_path"].as_str().unwrap()).unwrap();
    assert!(
        text.contains(" stdout this is not json")
            && text.contains("mystery_event")
            && text.contains("invalid utf-8 \u{fffd}\u{fffd} here"),
        "{text}"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn hard_timeout_fails_the_job() {
    let env = Env::new(&fake_agent_config("hard_timeout_secs = 1"));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    let id = run(&mcp, "S1", "slow").await;
    let j = wait_final(&mcp, &id, Duration::from_secs(15)).await;
    assert_eq!(
        (j["status"].as_str(), j["error_type"].as_str()),
        (Some("failed"), Some("timeout")),
        "{j}"
    );
    assert!(group_gone(&j));
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn open_claude_breaker_keeps_jobs_queued_and_probes_with_one() {
    let env = Env::new(&fake_agent_config(
        // Open long enough that the checks below cannot straddle the move to half-open on a loaded machine.
        "[breakers.claude_code]\nfailure_threshold = 1\nsuccess_threshold = 1\ntimeout_seconds = 6\nhalf_open_requests = 1",
    ));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    mcp.call("create_session", json!({"project_id": "app"}))
        .await
        .unwrap();
    let crash = run(&mcp, "S1", "crash").await;
    let j = wait_final(&mcp, &crash, Duration::from_secs(10)).await;
    assert_eq!(
        (j["status"].as_str(), j["exit_code"].as_i64()),
        (Some("failed"), Some(2))
    );
    assert_eq!(
        d.metric("televibe_circuit_breaker_state{name=\"claude_code\"}"),
        Some(0.0)
    );
    // Two sessions, two queued jobs: nothing starts while open, then exactly one probe runs alone.
    let a = run(&mcp, "S1", "after the outage").await;
    let b = run(&mcp, "S2", "after the outage too").await;
    let store = env.store_read_only().await;
    // The notice is written when a session finds its next job held by the open breaker.
    let deadline = Instant::now() + Duration::from_secs(20);
    while store
        .reader_count_events("claude.unavailable")
        .await
        .unwrap()
        == 0
    {
        assert!(Instant::now() < deadline, "a queued job was held");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        mcp.call("get_job", json!({"job_id": a})).await.unwrap()["status"],
        "queued",
        "no job starts while open"
    );
    assert_eq!(
        mcp.call("get_job", json!({"job_id": b})).await.unwrap()["status"],
        "queued"
    );
    assert_eq!(
        mcp.call("list_sessions", json!({})).await.unwrap()["sessions"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "status keeps working"
    );
    assert_eq!(
        d.metric("televibe_circuit_breaker_state{name=\"claude_code\"}"),
        Some(0.0),
        "the checks above ran while the breaker was open"
    );
    let ja = wait_final(&mcp, &a, Duration::from_secs(30)).await;
    let jb = wait_final(&mcp, &b, Duration::from_secs(30)).await;
    assert_eq!(
        (ja["status"].as_str(), jb["status"].as_str()),
        (Some("done"), Some("done"))
    );
    let (first, second) = if ja["started_at"].as_str() < jb["started_at"].as_str() {
        (&ja, &jb)
    } else {
        (&jb, &ja)
    };
    assert!(
        second["started_at"].as_str() >= first["finished_at"].as_str(),
        "the probe ran alone: {first} {second}"
    );
    assert_eq!(
        d.metric("televibe_circuit_breaker_state{name=\"claude_code\"}"),
        Some(1.0)
    );
    assert_eq!(
        store
            .reader_count_events("claude.unavailable")
            .await
            .unwrap(),
        2,
        "each session with a held job is told once (the notifier tells each chat once)"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrent_holds_across_sessions_and_the_agent_env_is_scrubbed() {
    // Port 0 cannot be connected to: Telegram is configured (with a token) but unreachable.
    let env = Env::new(&format!(
        "[agent]\ncommand = \"{FAKE_AGENT}\"\nenv = {{ EXTRA_FOR_AGENT = \"yes\" }}\n[jobs]\nmax_concurrent = 1\nkill_grace_secs = 1\n[telegram]\napi_url = \"http://127.0.0.1:0\""
    ));
    let d = env.start_with(|c| {
        c.env("TELEVIBE_TELEGRAM__TOKEN", "4242:very-secret-token");
    });
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    mcp.call("create_session", json!({"project_id": "app"}))
        .await
        .unwrap();
    let slow = run(&mcp, "S1", "slow").await;
    wait_status(&mcp, &slow, Duration::from_secs(10), |s| s == "running").await;
    let other = run(&mcp, "S2", "env").await;
    assert_eq!(
        mcp.call("get_job", json!({"job_id": other})).await.unwrap()["status"],
        "queued",
        "one slot, taken by S1"
    );
    mcp.call("cancel_job", json!({"job_id": slow}))
        .await
        .unwrap();
    let j = wait_final(&mcp, &other, Duration::from_secs(15)).await;
    assert_eq!(j["status"], "done", "{j}");
    // The slot, not luck, held the second job: it started only once the first had finished.
    let first = wait_final(&mcp, &slow, Duration::from_secs(15)).await;
    assert!(
        j["started_at"].as_str() >= first["finished_at"].as_str(),
        "one job at a time: {first} {j}"
    );
    let log = std::fs::read_to_string(j["log_path"].as_str().unwrap()).unwrap();
    assert!(
        !log.contains("very-secret-token") && !log.contains("TELEVIBE_TELEGRAM"),
        "secrets reach the agent: {log}"
    );
    for expected in [
        format!("TELEVIBE_JOB_ID={other}"),
        "TELEVIBE_SESSION_ID=S2".to_string(),
        "TELEVIBE_PROJECT_ID=app".to_string(),
        "TELEVIBE_BRANCH=televibe/S2".to_string(),
        format!(
            "TELEVIBE_WORKSPACE={}",
            env.root().join("workspaces/app/S2").display()
        ),
        format!("cwd={}", env.root().join("workspaces/app/S2").display()),
        "EXTRA_FOR_AGENT=yes".to_string(),
    ] {
        assert!(log.contains(&expected), "missing {expected} in {log}");
    }
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_job_kill_follows_the_runbook() {
    let env = Env::new(&fake_agent_config(""));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    let id = run(&mcp, "S1", "ignore-term").await;
    wait_status(&mcp, &id, Duration::from_secs(10), |s| s == "running").await;
    let out = env.run(&["admin", "job", "kill", &id[..8], "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        (
            j["status"].as_str(),
            j["error_type"].as_str(),
            j["error"].as_str()
        ),
        (Some("failed"), Some("killed"), Some("Manual termination"))
    );
    assert!(group_gone(&j));
    until_session(&mcp, "S1", "idle").await;
    let told = events(&env, &id)
        .await
        .into_iter()
        .find(|e| e.0 == "job.failed")
        .unwrap()
        .1;
    assert!(
        told["error"]
            .as_str()
            .unwrap()
            .contains("Manual termination"),
        "{told}"
    );
    let out = env.run(&["admin", "jobs"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id[..8]));
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_daemon_mid_job_then_recovery() {
    // A sandboxed agent dies with the daemon; an unconfined one outlives it and is killed at boot.
    for sandbox in ["bwrap", "none"] {
        kill_9_then_recovery(sandbox).await;
    }
}

async fn kill_9_then_recovery(sandbox: &str) {
    let env = Env::new(&format!(
        "[agent]\ncommand = \"{FAKE_AGENT}\"\nsandbox = \"{sandbox}\"\n[jobs]\nkill_grace_secs = 1\n"
    ));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    let stuck = run(&mcp, "S1", "grandchildren").await;
    let j = wait_status(&mcp, &stuck, Duration::from_secs(10), |s| s == "running").await;
    let pgid = j["pgid"].as_i64().unwrap() as i32;
    let next = run(&mcp, "S1", "after restart").await;
    drop(mcp);
    let kill_9 = |d: Daemon| {
        d.signal(libc::SIGKILL);
        let mut d = d;
        d.wait_exit(Duration::from_secs(5));
    };
    kill_9(d);
    if sandbox == "none" {
        assert!(
            !televibe::core::jobs::process::group_members(pgid).is_empty(),
            "an unconfined agent outlives a kill -9 of the daemon"
        );
    } else {
        eventually(
            Duration::from_secs(5),
            "the sandbox dies with the daemon",
            || televibe::core::jobs::process::group_members(pgid).is_empty(),
        );
    }
    // Cut by a restart, the job runs once more (`jobs.retry_interrupted`), ahead of the one queued behind it.
    let d2 = env.start();
    let mcp = Mcp::connect(&env).await;
    let j = wait_status(&mcp, &stuck, Duration::from_secs(15), |s| s == "running").await;
    assert_eq!(j["interruptions"], 1, "{j}");
    assert!(
        televibe::core::jobs::process::group_members(pgid).is_empty(),
        "the old group is killed at boot"
    );
    let again = j["pgid"].as_i64().unwrap() as i32;
    assert_ne!(again, pgid, "a new run");
    let n = mcp.call("get_job", json!({"job_id": next})).await.unwrap();
    assert_eq!(n["status"], "queued", "{n}");
    drop(mcp);
    // Cut a second time, it fails with the reason; the queued job then runs.
    kill_9(d2);
    let d3 = env.start();
    let mcp = Mcp::connect(&env).await;
    let j = mcp.call("get_job", json!({"job_id": stuck})).await.unwrap();
    assert_eq!(
        (j["status"].as_str(), j["error_type"].as_str()),
        (Some("failed"), Some("orchestrator_restart")),
        "{j}"
    );
    assert!(
        j["error"].as_str().unwrap().contains("a second time"),
        "{j}"
    );
    assert!(
        televibe::core::jobs::process::group_members(again).is_empty(),
        "the second run's group is killed at boot"
    );
    let n = wait_final(&mcp, &next, Duration::from_secs(15)).await;
    assert_eq!(n["status"], "done", "queued jobs resume: {n}");
    drop(d3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_session_actor_takes_its_runner_and_process_group_with_it() {
    let env = Env::new(&fake_agent_config(""));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    let id = run(&mcp, "S1", "grandchildren").await;
    let running = wait_status(&mcp, &id, Duration::from_secs(10), |s| s == "running").await;
    let next = run(&mcp, "S1", "next one").await;
    assert!(
        env.run(&["admin", "panic", "sessions/session:S1"])
            .status
            .success()
    );
    let j = wait_final(&mcp, &id, Duration::from_secs(60)).await;
    assert_eq!(
        (j["status"].as_str(), j["error_type"].as_str()),
        (Some("failed"), Some("internal")),
        "{j}"
    );
    eventually(Duration::from_secs(5), "group killed", || {
        group_gone(&running)
    });
    assert_eq!(
        wait_final(&mcp, &next, Duration::from_secs(15)).await["status"],
        "done"
    );
    let _ = Path::new(FAKE_AGENT);
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_close_cancels_the_running_job_and_kills_its_group() {
    let env = Env::new(&fake_agent_config(""));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    let wt = session(&env, &mcp).await;
    let id = run(&mcp, "S1", "grandchildren").await;
    let running = wait_status(&mcp, &id, Duration::from_secs(10), |s| s == "running").await;
    let queued = run(&mcp, "S1", "never runs").await;
    mcp.refused("close_session", json!({"session_id": "S1"}), "SESSION_BUSY")
        .await;
    mcp.call("close_session", json!({"session_id": "S1", "force": true}))
        .await
        .unwrap();
    let j = mcp.call("get_job", json!({"job_id": id})).await.unwrap();
    assert_eq!(j["status"], "canceled", "{j}");
    assert_eq!(
        mcp.call("get_job", json!({"job_id": queued}))
            .await
            .unwrap()["status"],
        "canceled"
    );
    eventually(Duration::from_secs(5), "group killed", || {
        group_gone(&running)
    });
    assert!(!wt.exists());
    mcp.refused(
        "run_instruction",
        json!({"session_id": "S1", "instruction": "more"}),
        "SESSION_CLOSING",
    )
    .await;
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_or_silent_runner_is_caught_by_its_session() {
    let env = Env::new(&fake_agent_config("heartbeat_timeout_secs = 3"));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    for (drill, error_type) in [("runner", "internal"), ("runner-stall", "hung")] {
        let id = run(&mcp, "S1", "grandchildren").await;
        let running = wait_status(&mcp, &id, Duration::from_secs(10), |s| s == "running").await;
        let asked = Instant::now();
        let out = env.run(&["admin", "panic", &format!("sessions/session:S1/{drill}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j = wait_final(&mcp, &id, Duration::from_secs(60)).await;
        assert_eq!(
            (j["status"].as_str(), j["error_type"].as_str()),
            (Some("failed"), Some(error_type)),
            "{drill}: {j}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "detected within the spec's 60 s"
        );
        eventually(Duration::from_secs(5), "group killed", || {
            group_gone(&running)
        });
        until_session(&mcp, "S1", "idle").await;
    }
    let next = run(&mcp, "S1", "after the drills").await;
    assert_eq!(
        wait_final(&mcp, &next, Duration::from_secs(15)).await["status"],
        "done"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_prefixes_lengths_and_kill_job_over_mcp() {
    let env = Env::new(&fake_agent_config(
        "[sessions]\nmax_per_project = 2\nmax_total = 3\n",
    ));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    session(&env, &mcp).await;
    make_repo(&env.root().join("repos/lib"));
    mcp.call("register_project", json!({"path": "lib"}))
        .await
        .unwrap();
    // Two sessions per project, three in all.
    mcp.call("create_session", json!({"project_id": "app"}))
        .await
        .unwrap();
    let r = mcp
        .refused(
            "create_session",
            json!({"project_id": "app"}),
            "SESSION_LIMIT",
        )
        .await;
    assert!(r.message.contains('2'), "{}", r.message);
    mcp.call("create_session", json!({"project_id": "lib"}))
        .await
        .unwrap();
    mcp.refused(
        "create_session",
        json!({"project_id": "lib"}),
        "SESSION_LIMIT",
    )
    .await;
    assert_eq!(
        mcp.call("list_sessions", json!({})).await.unwrap()["sessions"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "the refusals created nothing"
    );

    // 10,000 characters is the limit, counted in characters, not bytes (é is two bytes, 🦀 four).
    for (text, ok) in [
        ("é".repeat(10_000), true),
        ("🦀".repeat(10_000), true),
        ("é".repeat(10_001), false),
        (format!("{}x", "🦀".repeat(10_000)), false),
    ] {
        let r = mcp
            .call(
                "run_instruction",
                json!({"session_id": "S2", "instruction": text}),
            )
            .await;
        match (ok, r) {
            (true, Ok(j)) => {
                wait_final(&mcp, j["id"].as_str().unwrap(), Duration::from_secs(30)).await;
            }
            (false, Err(e)) => assert_eq!(e.code, "INSTRUCTION_TOO_LONG", "{e:?}"),
            (ok, r) => panic!(
                "{} chars: expected ok={ok}, got {r:?}",
                text.chars().count()
            ),
        }
    }

    // Job ids by unique prefix (8 or more characters); a prefix two jobs share is refused, naming the cause.
    let id = run(&mcp, "S1", "ignore-term").await;
    wait_status(&mcp, &id, Duration::from_secs(10), |s| s == "running").await;
    assert_eq!(
        mcp.call("get_job", json!({"job_id": &id[..8]}))
            .await
            .unwrap()["id"],
        json!(id)
    );
    mcp.refused("get_job", json!({"job_id": &id[..7]}), "JOB_NOT_FOUND")
        .await;
    let store = env.store().await;
    let twin = format!("{}-0000-4000-8000-000000000000", &id[..8]);
    assert!(
        store
            .insert_job(&twin, "S3", "twin", "claude")
            .await
            .unwrap()
            .is_some()
    );
    let r = mcp
        .refused("get_job", json!({"job_id": &id[..8]}), "JOB_NOT_FOUND")
        .await;
    assert!(r.message.contains("matches several jobs"), "{}", r.message);
    assert_eq!(
        mcp.call("get_job", json!({"job_id": &id[..13]}))
            .await
            .unwrap()["id"],
        json!(id),
        "a longer prefix tells them apart"
    );

    // kill_job follows the runbook (TERM, grace, KILL) for a job that ignores SIGTERM.
    let j = mcp.call("kill_job", json!({"job_id": id})).await.unwrap();
    assert_eq!(
        (
            j["status"].as_str(),
            j["error_type"].as_str(),
            j["error"].as_str()
        ),
        (Some("failed"), Some("killed"), Some("Manual termination")),
        "{j}"
    );
    assert!(group_gone(&j));
    mcp.refused(
        "kill_job",
        json!({"job_id": "00000000-0000-0000-0000-000000000000"}),
        "JOB_NOT_FOUND",
    )
    .await;
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn real_claude_code_against_a_difficult_model_api() {
    let (claude, env, home, target) = real_claude_env("retried.txt");
    let retried = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = retried.clone();
    let broken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let broke = broken.clone();
    let model = FakeModel::start(move |req| {
        // The session's jobs share one conversation: the newest message says what this request is about.
        let text = last_text_of(req);
        if text.contains("PINGS") {
            Reply::StallMidStream {
                text: "Half a thou".into(),
            }
        } else if text.contains("STALL") {
            Reply::Stall
        } else if text.contains("MIDSTREAM") {
            // The stream breaks off with an `event: error` once; the next try goes through.
            match broke.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => Reply::StreamError {
                    text: "Half an ans".into(),
                    kind: "overloaded_error".into(),
                },
                _ => Reply::Text("Whole answer.".into()),
            }
        } else if text_of(req).contains("RETRY") {
            if after_tool(req) {
                return Reply::Text("Done after retries.".into());
            }
            match seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => Reply::error(
                    429,
                    "rate_limit_error",
                    "Number of requests has exceeded your rate limit",
                ),
                1 => Reply::error(529, "overloaded_error", "Overloaded"),
                // Two blocks in one message: some text, then the tool use.
                _ => Reply::Blocks(vec![
                    Reply::Text("Writing the file.".into()),
                    Reply::ToolUse {
                        name: "Write".into(),
                        input: json!({"file_path": target, "content": "retried\n"}),
                    },
                ]),
            }
        } else {
            Reply::Text("ok".into())
        }
    })
    .await;
    env.write_config(&real_claude_config(
        &claude,
        &model,
        &home,
        "hang_timeout_secs = 8\nkill_grace_secs = 2\n",
    ));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    let wt = session(&env, &mcp).await;

    // 429 then 529: the agent retries both, the job goes on and the retries reach the job's events.
    let id = run(&mcp, "S1", "RETRY then write the file").await;
    let j = wait_final(&mcp, &id, Duration::from_secs(90)).await;
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!(j["result_text"], "Done after retries.", "{j}");
    assert_eq!(
        std::fs::read_to_string(wt.join("retried.txt")).unwrap(),
        "retried\n"
    );
    let statuses: Vec<i64> = events(&env, &id)
        .await
        .into_iter()
        .filter(|e| e.0 == "job.api_retry")
        .filter_map(|e| e.1["error_status"].as_i64())
        .collect();
    assert_eq!(statuses, [429, 529], "one retry event per refused request");

    let id = run(&mcp, "S1", "MIDSTREAM please").await;
    let j = wait_final(&mcp, &id, Duration::from_secs(90)).await;
    // The agent asks again after a stream broken by `event: error`; the half answer is not the result.
    assert_eq!(
        (j["status"].as_str(), j["result_text"].as_str()),
        (Some("done"), Some("Whole answer.")),
        "{j}"
    );
    assert_eq!(broken.load(std::sync::atomic::Ordering::SeqCst), 2);

    // A stalled model: the connection stays open and nothing comes. The agent's process idles (its timers may
    // tick), produces no output, and the hang detector ends the job after hang_timeout_secs.
    ends_hung(&mcp, "STALL forever", Duration::from_secs(60)).await;
    // Stalled in the middle of the answer, the connection kept alive by `ping` events: still hung.
    ends_hung(&mcp, "PINGS then silence", Duration::from_secs(60)).await;
    drop(d);
}

//! The real OpenAI Codex CLI (the pinned 0.169.0 that `scripts/install-deps` puts in `.codex-cli/`) against
//! the loopback Responses API fake, without the daemon: `codex exec --json`, and `codex app-server` over
//! stdio asking for approval of a write command and of a patch, failing a turn on the model API's errors
//! (500, 429, usage limit, a stream cut short) and resuming a thread in another process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::fake_openai::{
    CACHED_TOKENS, FakeOpenAi, INPUT_TOKENS, OUTPUT_TOKENS, REASONING_TOKENS, Reply, after_tool,
    last_user_text, text_of, tool_output,
};

/// The pinned Codex binary, its version checked; the test fails (never skips) when it is missing.
pub fn codex_bin() -> PathBuf {
    crate::harness::codex_cli()
}

/// A scratch root for one run: HOME, CODEX_HOME and the workspace, in the target directory (Codex's own
/// sandbox refuses a CODEX_HOME under the temp dir); removed on drop.
pub struct Scratch {
    pub root: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("codex_cli")
            .join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
        for d in ["home", "codex_home", "work"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        Scratch { root }
    }

    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    pub fn codex_home(&self) -> PathBuf {
        self.root.join("codex_home")
    }

    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    /// `codex <args…>` with a clean environment and the fake as the model provider `fake`.
    pub fn codex(&self, fake: &FakeOpenAi, args: &[&str]) -> Command {
        let mut cmd = Command::new(codex_bin());
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.home())
            .env("CODEX_HOME", self.codex_home())
            .env("OPENAI_API_KEY", "sk-test")
            .args(args)
            .args(provider_flags(fake))
            .current_dir(self.work())
            .kill_on_drop(true);
        cmd
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The `-c` overrides that point Codex at the fake (0.169.0 ignores `OPENAI_BASE_URL`; a custom provider is
/// the only way), with the API key from `OPENAI_API_KEY` sent as `authorization: Bearer …`.
pub fn provider_flags(fake: &FakeOpenAi) -> Vec<String> {
    [
        "model_provider=\"fake\"".to_string(),
        "model=\"gpt-5.5\"".to_string(),
        "model_providers.fake.name=\"fake\"".to_string(),
        format!("model_providers.fake.base_url=\"{}\"", fake.base_url()),
        "model_providers.fake.wire_api=\"responses\"".to_string(),
        "model_providers.fake.env_key=\"OPENAI_API_KEY\"".to_string(),
    ]
    .into_iter()
    .flat_map(|c| ["-c".to_string(), c])
    .collect()
}

/// The script of the tests: a tool result ends the turn; otherwise the keyword picks the call.
fn script(req: &Value) -> Reply {
    if after_tool(req) {
        return Reply::text("All done.");
    }
    let text = last_user_text(req);
    if text.contains("ESCALATED_HELLO") {
        Reply::exec_escalated("echo hello > hello.txt", "Write hello.txt")
    } else if text.contains("WRITE_HELLO") {
        Reply::Items(vec![
            Reply::text("Writing it."),
            Reply::exec("echo hello > hello.txt"),
        ])
    } else if text.contains("PATCH_HELLO") {
        Reply::add_file("hello.txt", "hello")
    } else {
        Reply::text("hi")
    }
}

/// A `codex app-server` over stdio: JSON-RPC, one message a line.
pub struct AppServer {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// Every message received, in order.
    pub log: Vec<Value>,
}

/// How long any one message may take to come.
const WAIT: Duration = Duration::from_secs(60);

impl AppServer {
    pub fn spawn(mut cmd: Command) -> AppServer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        AppServer {
            child,
            stdin,
            lines,
            next_id: 1,
            log: Vec::new(),
        }
    }

    pub async fn send(&mut self, msg: Value) {
        let stdin = self.stdin.as_mut().expect("stdin is closed");
        stdin
            .write_all(format!("{msg}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Closes app-server's stdin (EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next message; `None` at EOF.
    pub async fn next(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("app-server said nothing for a minute")
            .unwrap()?;
        let msg: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not JSON from app-server ({e}): {line}"));
        self.log.push(msg.clone());
        Some(msg)
    }

    /// Reads until a message matches `pred`, and returns it.
    pub async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let msg = self.next().await.unwrap_or_else(|| {
                panic!("app-server closed its stdout; it said: {:#?}", self.log)
            });
            if pred(&msg) {
                return msg;
            }
        }
    }

    /// A notification or server request named `method`.
    pub async fn wait_method(&mut self, method: &str) -> Value {
        self.wait_for(|m| m["method"] == method).await
    }

    /// Sends a request and returns its result (panics on an error answer).
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let answer = self
            .wait_for(|m| m["id"] == id && m.get("method").is_none())
            .await;
        assert!(answer.get("error").is_none(), "{method} failed: {answer}");
        answer["result"].clone()
    }

    /// `initialize` (a `clientInfo` is all it needs), then `initialized`.
    pub async fn initialize(&mut self) -> Value {
        let result = self
            .request(
                "initialize",
                json!({"clientInfo": {"name": "televibe_test", "version": "0.0.1"}}),
            )
            .await;
        self.send(json!({"jsonrpc": "2.0", "method": "initialized"}))
            .await;
        result
    }

    /// `thread/start`; returns the thread id.
    pub async fn start_thread(&mut self, cwd: &Path, approval: &str, sandbox: &str) -> String {
        let result = self
            .request(
                "thread/start",
                json!({"cwd": cwd, "approvalPolicy": approval, "sandbox": sandbox}),
            )
            .await;
        result["thread"]["id"].as_str().unwrap().to_string()
    }

    /// `turn/start` with one text input; returns the turn id.
    pub async fn start_turn(&mut self, thread: &str, text: &str) -> String {
        let result = self
            .request(
                "turn/start",
                json!({"threadId": thread, "input": [{"type": "text", "text": text}]}),
            )
            .await;
        result["turn"]["id"].as_str().unwrap().to_string()
    }

    /// Answers a server request (an approval) with `result`.
    pub async fn answer(&mut self, request: &Value, result: Value) {
        self.send(json!({"jsonrpc": "2.0", "id": request["id"], "result": result}))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_version_is_the_pinned_one() {
    let out = std::process::Command::new(codex_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("codex-cli {}", crate::harness::CODEX_VERSION)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_json_says_hi_with_usage() {
    let fake = FakeOpenAi::start(script).await;
    let scratch = Scratch::new("exec_hi");
    let work = scratch.work();
    let out = scratch
        .codex(
            &fake,
            &[
                "exec",
                "--json",
                "--skip-git-repo-check",
                "-C",
                work.to_str().unwrap(),
                "SAY_HI",
            ],
        )
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "codex exec failed: {stdout}\n{stderr}"
    );
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events.iter().any(|e| e["type"] == "item.completed"
            && e["item"]["type"] == "agent_message"
            && e["item"]["text"] == "hi"),
        "no agent_message \"hi\": {stdout}"
    );
    let done = events
        .iter()
        .find(|e| e["type"] == "turn.completed")
        .unwrap_or_else(|| panic!("no turn.completed: {stdout}"));
    let usage = &done["usage"];
    assert_eq!(usage["input_tokens"], INPUT_TOKENS, "{done}");
    assert_eq!(usage["cached_input_tokens"], CACHED_TOKENS, "{done}");
    assert_eq!(usage["output_tokens"], OUTPUT_TOKENS, "{done}");
    assert_eq!(usage["reasoning_output_tokens"], REASONING_TOKENS, "{done}");
    assert_eq!(fake.requests().len(), 1, "{:?}", fake.paths());
    assert_eq!(fake.auths(), vec!["Bearer sk-test".to_string()]);
    assert_eq!(last_user_text(&fake.requests()[0]), "SAY_HI");
}

/// An app-server with a started thread (`untrusted`, `danger-full-access`) and a turn on `text`.
async fn turn(fake: &FakeOpenAi, scratch: &Scratch, text: &str) -> (AppServer, String) {
    let mut app = AppServer::spawn(scratch.codex(fake, &["app-server"]));
    app.initialize().await;
    let thread = app
        .start_thread(&scratch.work(), "untrusted", "danger-full-access")
        .await;
    app.start_turn(&thread, text).await;
    (app, thread)
}

#[tokio::test(flavor = "multi_thread")]
async fn app_server_asks_before_a_write_command_and_runs_it_when_accepted() {
    let fake = FakeOpenAi::start(script).await;
    let scratch = Scratch::new("appserver_accept");
    let (mut app, thread) = turn(&fake, &scratch, "WRITE_HELLO").await;
    let ask = app
        .wait_method("item/commandExecution/requestApproval")
        .await;
    assert_eq!(ask["params"]["threadId"], thread.as_str(), "{ask}");
    assert!(
        ask["params"]["command"]
            .as_str()
            .unwrap()
            .contains("echo hello > hello.txt"),
        "{ask}"
    );
    assert!(
        !scratch.work().join("hello.txt").exists(),
        "written before the approval"
    );
    app.answer(&ask, json!({"decision": "accept"})).await;
    let done = app.wait_method("turn/completed").await;
    assert_eq!(done["params"]["turn"]["status"], "completed", "{done}");
    assert_eq!(
        std::fs::read_to_string(scratch.work().join("hello.txt")).unwrap(),
        "hello\n"
    );
    // The message before the call is an item of its own (`turn/completed` sums up only the last one).
    assert!(
        app.log.iter().any(|m| m["method"] == "item/completed"
            && m["params"]["item"]["type"] == "agentMessage"
            && m["params"]["item"]["text"] == "Writing it."),
        "{:#?}",
        app.log
    );
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2, "{:?}", fake.paths());
    assert!(
        tool_output(&reqs[1]).contains("exited with code 0"),
        "{}",
        tool_output(&reqs[1])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn app_server_declined_write_command_does_not_run() {
    let fake = FakeOpenAi::start(script).await;
    let scratch = Scratch::new("appserver_decline");
    let (mut app, _) = turn(&fake, &scratch, "ESCALATED_HELLO").await;
    let ask = app
        .wait_method("item/commandExecution/requestApproval")
        .await;
    // The justification of an escalated call is the approval's reason.
    assert_eq!(ask["params"]["reason"], "Write hello.txt", "{ask}");
    app.answer(&ask, json!({"decision": "decline"})).await;
    let done = app.wait_method("turn/completed").await;
    assert_eq!(done["params"]["turn"]["status"], "completed", "{done}");
    assert!(!scratch.work().join("hello.txt").exists());
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        tool_output(&reqs[1]).contains("rejected by user"),
        "{}",
        tool_output(&reqs[1])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn app_server_asks_before_a_patch_and_applies_it_when_accepted() {
    let fake = FakeOpenAi::start(script).await;
    let scratch = Scratch::new("appserver_patch");
    let (mut app, _) = turn(&fake, &scratch, "PATCH_HELLO").await;
    let ask = app.wait_method("item/fileChange/requestApproval").await;
    assert!(!scratch.work().join("hello.txt").exists());
    app.answer(&ask, json!({"decision": "accept"})).await;
    let done = app.wait_method("turn/completed").await;
    assert_eq!(done["params"]["turn"]["status"], "completed", "{done}");
    assert_eq!(
        std::fs::read_to_string(scratch.work().join("hello.txt")).unwrap(),
        "hello\n"
    );
    let reqs = fake.requests();
    assert_eq!(
        reqs[1]["input"].as_array().unwrap().last().unwrap()["type"],
        "custom_tool_call_output"
    );
}

/// `-c` overrides that make Codex give up on the first failure (by default it tries 5 × 6 times on a 500).
const NO_RETRIES: [&str; 4] = [
    "-c",
    "model_providers.fake.request_max_retries=0",
    "-c",
    "model_providers.fake.stream_max_retries=0",
];

/// An app-server (with `extra` arguments) whose one turn on "GO" meets `reply`; returns the `error`
/// notifications and the `turn/completed`.
async fn failing_turn(reply: Reply, extra: &[&str]) -> (FakeOpenAi, Vec<Value>, Value) {
    let fake = FakeOpenAi::start(move |_| reply.clone()).await;
    let scratch = Scratch::new("appserver_error");
    let mut args = vec!["app-server"];
    args.extend_from_slice(extra);
    let mut app = AppServer::spawn(scratch.codex(&fake, &args));
    app.initialize().await;
    let thread = app
        .start_thread(&scratch.work(), "untrusted", "danger-full-access")
        .await;
    app.start_turn(&thread, "GO").await;
    let done = app.wait_method("turn/completed").await;
    let errors = app
        .log
        .iter()
        .filter(|m| m["method"] == "error")
        .cloned()
        .collect();
    (fake, errors, done)
}

#[tokio::test(flavor = "multi_thread")]
async fn app_server_fails_the_turn_on_a_500_when_retries_are_off() {
    let (fake, errors, done) =
        failing_turn(Reply::error(500, "server_error", "boom"), &NO_RETRIES).await;
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["params"]["willRetry"], false, "{errors:?}");
    let turn = &done["params"]["turn"];
    assert_eq!(turn["status"], "failed", "{done}");
    assert_eq!(
        turn["error"]["codexErrorInfo"], "internalServerError",
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn app_server_retries_a_429_after_its_retry_after() {
    let started = std::time::Instant::now();
    let (fake, errors, done) = failing_turn(
        Reply::rate_limited(1),
        &["-c", "model_providers.fake.stream_max_retries=1"],
    )
    .await;
    // One retry, a second later (`retry-after: 1`); a 429 is not retried per request.
    assert_eq!(fake.requests().len(), 2, "{:?}", fake.paths());
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["params"]["willRetry"], true, "{errors:?}");
    assert_eq!(
        errors[0]["params"]["error"]["codexErrorInfo"],
        json!({"responseStreamDisconnected": {"httpStatusCode": 429}}),
        "{errors:?}"
    );
    assert_eq!(errors[1]["params"]["willRetry"], false, "{errors:?}");
    let turn = &done["params"]["turn"];
    assert_eq!(turn["status"], "failed", "{done}");
    assert_eq!(
        turn["error"]["codexErrorInfo"],
        json!({"responseTooManyFailedAttempts": {"httpStatusCode": 429}}),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn app_server_reports_a_usage_limit_and_its_rate_limit_headers() {
    let fake = FakeOpenAi::start(|_| Reply::usage_limit_reached(2_000_000_000)).await;
    let scratch = Scratch::new("appserver_usage");
    let mut app = AppServer::spawn(scratch.codex(&fake, &["app-server"]));
    app.initialize().await;
    let thread = app
        .start_thread(&scratch.work(), "untrusted", "danger-full-access")
        .await;
    app.start_turn(&thread, "GO").await;
    let limits = app.wait_method("account/rateLimits/updated").await;
    assert_eq!(
        limits["params"]["rateLimits"]["primary"],
        json!({"usedPercent": 100, "windowDurationMins": 300, "resetsAt": 2_000_000_000}),
        "{limits}"
    );
    let done = app.wait_method("turn/completed").await;
    assert_eq!(fake.requests().len(), 1, "a usage limit is not retried");
    let turn = &done["params"]["turn"];
    assert_eq!(turn["status"], "failed", "{done}");
    assert_eq!(
        turn["error"]["codexErrorInfo"], "usageLimitExceeded",
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn app_server_fails_the_turn_on_a_stream_error_when_retries_are_off() {
    let (fake, errors, done) = failing_turn(
        Reply::StreamError {
            text: "partial".into(),
        },
        &NO_RETRIES,
    )
    .await;
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let turn = &done["params"]["turn"];
    assert_eq!(turn["status"], "failed", "{done}");
    assert_eq!(turn["error"]["codexErrorInfo"], "other", "{done}");
    assert!(
        turn["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("stream disconnected before completion"),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn app_server_resumes_a_thread_in_another_process() {
    let fake = FakeOpenAi::start(|req| {
        if text_of(req).contains("FIRST") && last_user_text(req).contains("SECOND") {
            Reply::text("second answer")
        } else {
            Reply::text("first answer")
        }
    })
    .await;
    let scratch = Scratch::new("appserver_resume");
    let mut app = AppServer::spawn(scratch.codex(&fake, &["app-server"]));
    app.initialize().await;
    let thread = app
        .start_thread(&scratch.work(), "untrusted", "danger-full-access")
        .await;
    app.start_turn(&thread, "FIRST").await;
    app.wait_method("turn/completed").await;
    // EOF on stdin ends app-server.
    app.close_stdin();
    let status = tokio::time::timeout(Duration::from_secs(10), app.child.wait())
        .await
        .expect("app-server did not exit on EOF")
        .unwrap();
    assert!(status.success(), "{status}");

    let mut app = AppServer::spawn(scratch.codex(&fake, &["app-server"]));
    app.initialize().await;
    // A thread of another process is unknown until resumed.
    app.send(json!({"jsonrpc": "2.0", "id": 99, "method": "turn/start",
                    "params": {"threadId": thread, "input": [{"type": "text", "text": "SECOND"}]}}))
        .await;
    let refused = app.wait_for(|m| m["id"] == 99).await;
    assert_eq!(
        refused["error"]["message"],
        format!("thread not found: {thread}"),
        "{refused}"
    );
    let resumed = app
        .request("thread/resume", json!({"threadId": thread}))
        .await;
    assert_eq!(resumed["thread"]["id"], thread.as_str());
    assert_eq!(
        resumed["approvalPolicy"], "untrusted",
        "kept from thread/start"
    );
    assert_eq!(resumed["sandbox"]["type"], "dangerFullAccess");
    assert_eq!(resumed["thread"]["turns"].as_array().unwrap().len(), 1);
    app.start_turn(&thread, "SECOND").await;
    let done = app.wait_method("turn/completed").await;
    assert_eq!(
        done["params"]["turn"]["items"][0]["text"], "second answer",
        "{done}"
    );
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    let texts: Vec<String> = reqs[1]["input"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message" && i["role"] != "developer")
        .map(|i| {
            i["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .filter(|t| !t.starts_with("<environment_context>"))
        .collect();
    assert_eq!(texts, ["FIRST", "first answer", "SECOND"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_reply_sends_nothing() {
    let fake = FakeOpenAi::start(|_| Reply::Stall).await;
    let client = reqwest::Client::new();
    let sent = client
        .post(format!("{}/responses", fake.base_url()))
        .header("authorization", "Bearer sk-test")
        .json(&json!({"model": "gpt-5.5", "stream": true, "input": []}))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(sent.unwrap_err().is_timeout());
    assert_eq!(fake.auths(), ["Bearer sk-test"]);
}

//! `televibe mcp` against real clients: rmcp's client, Claude Code's captured handshake, and the real Claude Code CLI.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;

use crate::harness::*;

fn spawn_bridge(env: &Env) -> Child {
    env.command(&["mcp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn structured(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    tool: &str,
) -> serde_json::Value {
    let r = client
        .call_tool(CallToolRequestParams::new(tool.to_string()))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{tool}: {r:?}");
    r.structured_content.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn rmcp_client_through_the_bridge_survives_a_daemon_restart() {
    let env = Env::new("");
    let d = env.start();
    let mut bridge = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(env.config())
        .arg("mcp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (stdout, stdin) = (bridge.stdout.take().unwrap(), bridge.stdin.take().unwrap());
    let client = ().serve((stdout, stdin)).await.unwrap();
    let info = client.peer_info().unwrap();
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("televibe")
    );
    let tools: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    for t in ["get_health", "get_supervision_tree"] {
        assert!(tools.contains(&t.to_string()), "{tools:?}");
    }
    let health = structured(&client, "get_health").await;
    assert_eq!(health["live"], true);
    assert_eq!(health["readiness"]["checks"]["telegram"], "disabled");
    let tree = structured(&client, "get_supervision_tree").await;
    assert_eq!(tree["name"], "root");

    // The daemon restarts; the same client keeps working through the bridge.
    assert!(d.stop().success());
    let d2 = env.start();
    let tree = tokio::time::timeout(
        Duration::from_secs(20),
        structured(&client, "get_supervision_tree"),
    )
    .await
    .unwrap();
    assert_eq!(tree["children"].as_array().unwrap().len(), 8);
    let _ = client.cancel().await;
    drop(d2);
}

/// Sends one line and reads lines until the answer with `id` arrives.
fn exchange(
    stdin: &mut ChildStdin,
    rx: &mpsc::Receiver<String>,
    line: &str,
    id: Option<&serde_json::Value>,
) -> Option<serde_json::Value> {
    writeln!(stdin, "{line}").unwrap();
    stdin.flush().unwrap();
    let id = id?;
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("answer within 10 s");
        let v = json(&l);
        if &v["id"] == id {
            return Some(v);
        }
    }
}

#[test]
fn claude_code_handshake_from_the_capture_is_answered() {
    let env = Env::new("");
    let d = env.start();
    let mut bridge = spawn_bridge(&env);
    let mut stdin = bridge.stdin.take().unwrap();
    let stdout = bridge.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let capture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/claude-code-2.1.328-handshake.jsonl"
    ))
    .unwrap();
    let mut answers = Vec::new();
    for line in capture.lines() {
        let v = json(line);
        let id = v.get("id").cloned();
        answers.push((
            v["method"].as_str().unwrap().to_string(),
            exchange(&mut stdin, &rx, line, id.as_ref()),
        ));
    }
    let discover = answers[0].1.as_ref().unwrap();
    assert_eq!(answers[0].0, "server/discover");
    assert!(
        discover.get("result").is_some(),
        "discover probe must get a result: {discover}"
    );
    let init = answers[1].1.as_ref().unwrap();
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "televibe");
    assert!(init["result"]["capabilities"]["tools"].is_object());
    let list = answers[3].1.as_ref().unwrap();
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"get_health") && names.contains(&"get_supervision_tree"),
        "{names:?}"
    );
    drop(stdin);
    assert!(
        wait_exit(&mut bridge, Duration::from_secs(10)).success(),
        "bridge exits when its client closes stdin"
    );
    drop(d);
}

#[test]
fn unknown_tool_is_a_json_rpc_error_and_bad_json_is_survived() {
    let env = Env::new("");
    let d = env.start();
    let mut bridge = spawn_bridge(&env);
    let mut stdin = bridge.stdin.take().unwrap();
    let stdout = bridge.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    exchange(&mut stdin, &rx, init, Some(&serde_json::json!(1))).unwrap();
    exchange(
        &mut stdin,
        &rx,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        None,
    );
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"no_such_tool","arguments":{}}}"#;
    let r = exchange(&mut stdin, &rx, call, Some(&serde_json::json!(2))).unwrap();
    assert_eq!(r["error"]["code"], -32602, "{r}");
    // A line that is not JSON: answered with a parse error (id null), and the connection goes on.
    for bad in [r#"{"jsonrpc":"2.0","id":7,"method":"#, "not json at all"] {
        let r = exchange(&mut stdin, &rx, bad, Some(&serde_json::Value::Null)).unwrap();
        assert_eq!(r["error"]["code"], -32700, "{r}");
    }
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_health","arguments":{}}}"#;
    let r = exchange(&mut stdin, &rx, call, Some(&serde_json::json!(3))).unwrap();
    assert_eq!(r["result"]["isError"], false, "{r}");
    drop(stdin);
    let _ = wait_exit(&mut bridge, Duration::from_secs(10));
    drop(d);
}

#[test]
fn real_claude_code_cli_connects_through_the_bridge() {
    let claude = claude_cli();
    let env = Env::new("");
    let d = env.start();
    let home = env.dir.path().join("home");
    let work = env.dir.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let mcp = serde_json::json!({"mcpServers": {"televibe": {
        "type": "stdio", "command": BIN, "args": ["--config", env.config(), "mcp"]}}});
    // Nothing listens on the model API address: the CLI prints its init event, then retries; we stop it then.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cli = std::process::Command::new(claude)
        .args([
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--strict-mcp-config",
            "--mcp-config",
        ])
        .arg(mcp.to_string())
        .current_dir(&work)
        .env("HOME", &home)
        .env("ANTHROPIC_API_KEY", "sk-test")
        .env(
            "ANTHROPIC_BASE_URL",
            format!("http://127.0.0.1:{dead_port}"),
        )
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cli.stdin.take().unwrap().write_all(b"say hi").unwrap();
    let stdout = cli.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let init = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("system/init from the CLI");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["type"] == "system" && v["subtype"] == "init" {
            break v;
        }
    };
    let _ = cli.kill();
    let _ = cli.wait();
    let servers = init["mcp_servers"].as_array().unwrap();
    let televibe = servers
        .iter()
        .find(|s| s["name"] == "televibe")
        .unwrap_or_else(|| panic!("{init}"));
    assert_eq!(televibe["status"], "connected", "{init}");
    let tools: Vec<&str> = init["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(tools.contains(&"mcp__televibe__get_health"), "{tools:?}");
    assert!(
        tools.contains(&"mcp__televibe__get_supervision_tree"),
        "{tools:?}"
    );
    drop(d);
}

#[test]
fn a_line_that_is_not_json_gets_a_parse_error_on_the_socket() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let env = Env::new("");
    let d = env.start();
    let mut sock = UnixStream::connect(env.socket()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answers = BufReader::new(sock.try_clone().unwrap()).lines();
    // As the first line and later on: each is answered, and the connection goes on.
    sock.write_all(b"not json\n").unwrap();
    let parse_error =
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#;
    assert_eq!(answers.next().unwrap().unwrap(), parse_error);
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    writeln!(sock, "{init}").unwrap();
    let r = json(&answers.next().unwrap().unwrap());
    assert_eq!(r["id"], 1, "{r}");
    writeln!(
        sock,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    sock.write_all(b"{\"jsonrpc\": broken\n").unwrap();
    assert_eq!(answers.next().unwrap().unwrap(), parse_error);
    writeln!(
        sock,
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"get_health","arguments":{{}}}}}}"#
    )
    .unwrap();
    let r = json(&answers.next().unwrap().unwrap());
    assert_eq!(r["id"], 2, "{r}");
    assert_eq!(r["result"]["isError"], false, "{r}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_in_flight_when_the_daemon_dies_gets_an_error_and_the_bridge_goes_on() {
    let env = Env::new(&format!(
        "[agent]\ncommand = \"{}/tests/data/fake-agent.sh\"\n[jobs]\nkill_grace_secs = 60\nretry_interrupted = false\n",
        env!("CARGO_MANIFEST_DIR")
    ));
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    crate::jobs::session(&env, &mcp).await;
    let id = crate::jobs::run(&mcp, "S1", "ignore-term").await;
    crate::jobs::wait_status(&mcp, &id, Duration::from_secs(20), |s| s == "running").await;
    // kill_job waits out the grace period for a job that ignores SIGTERM: the call is in flight for a minute.
    let peer = mcp.client.peer().clone();
    let mut p = CallToolRequestParams::new("kill_job");
    p.arguments = serde_json::json!({"job_id": id}).as_object().cloned();
    let call = tokio::spawn(async move { peer.call_tool(p).await });
    let audit = env.orchestrator().join("logs/audit.log");
    until(Duration::from_secs(20), "the kill is under way", || {
        std::fs::read_to_string(&audit).is_ok_and(|a| a.contains("admin.job_kill"))
    })
    .await;
    d.signal(libc::SIGKILL);
    let mut d = d;
    d.wait_exit(Duration::from_secs(10));
    let answer = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the call is answered, not left hanging")
        .unwrap();
    let err = answer.expect_err("the daemon died before answering");
    assert!(
        err.to_string()
            .contains("connection lost before the answer"),
        "{err}"
    );
    // The same client goes on with the next daemon, through the same bridge.
    let d2 = env.start();
    let j = tokio::time::timeout(
        Duration::from_secs(30),
        mcp.call("get_job", serde_json::json!({"job_id": id})),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(j["error_type"], "orchestrator_restart", "{j}");
    drop(d2);
}

//! Two nodes on one throwaway PostgreSQL: exactly one leader, a session placed on the follower runs its job
//! there with the real Claude Code CLI, approved from the phone through the leader; the leader killed with
//! -9 and another leading within 10 s, nothing lost or delivered twice; the killed node back as a follower.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_model::{FakeModel, Reply, after_tool, text_of};
use crate::fake_telegram::{FakeTelegram, TOKEN};
use crate::harness::*;
use crate::pg::PgCluster as Postgres;

const USER: i64 = 4242;

/// One Bash command per instruction: `STATUS` → one the policy allows, anything else → one a person approves.
async fn model() -> FakeModel {
    FakeModel::start(|req| {
        if after_tool(req) {
            return Reply::Text("finished".into());
        }
        let cmd = if text_of(req).contains("STATUS") {
            "touch allowed.txt"
        } else {
            "echo hello > hello.txt"
        };
        Reply::ToolUse {
            name: "Bash".into(),
            input: json!({"command": cmd, "description": "run it"}),
        }
    })
    .await
}

fn node_env(pg: &Postgres, node: &str, model: &FakeModel, tg: &FakeTelegram) -> Env {
    let env = Env::new("");
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    env.write_config(&format!(
        "[store]\nurl = \"{}\"\n\
         [cluster]\nnode_id = \"{node}\"\nheartbeat_secs = 1\nnode_timeout_secs = 5\n\
         [agent]\ncommand = \"{}\"\nenv = {{ ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"sk-test\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", HOME = \"{}\" }}\n\
         [jobs]\nhard_timeout_secs = 120\n\
         [approvals]\nauto_allow = [\"touch allowed.txt\"]\n\
         [telegram]\napi_url = \"{}\"\nallowed_users = [{USER}]\n",
        pg.url(),
        claude_cli().display(),
        model.url(),
        home.display(),
        tg.url()
    ));
    env
}

fn start(env: &Env) -> Daemon {
    env.start_with(|c| {
        c.env("TELEVIBE_TELEGRAM__TOKEN", TOKEN);
    })
}

fn leads(d: &Daemon) -> bool {
    d.metric("televibe_cluster_leader ") == Some(1.0)
}

fn nodes(env: &Env) -> Value {
    let out = env.run(&["admin", "nodes", "--json"]);
    assert!(out.status.success(), "{out:?}");
    json(&String::from_utf8_lossy(&out.stdout))
}

/// Whether `admin nodes` (asked on `env`'s node) shows `node` in `state`.
fn node_is(env: &Env, node: &str, state: &str) -> bool {
    nodes(env)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["node_id"] == node && n["state"] == state)
}

fn helps(tg: &FakeTelegram) -> usize {
    tg.messages(USER)
        .iter()
        .filter(|m| m.text.contains("<b>TeleVibeCode</b>"))
        .count()
}

fn trackers_done(tg: &FakeTelegram, marker: &str) -> usize {
    tg.messages(USER)
        .iter()
        .filter(|m| m.text.contains("<b>Job ") && m.text.contains(marker) && m.text.contains("✅"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_one_leader_placement_approval_and_failover() {
    let pg = Postgres::start();
    let tg = FakeTelegram::start().await;
    let model = model().await;
    let env_a = node_env(&pg, "a", &model, &tg);
    let env_b = node_env(&pg, "b", &model, &tg);

    // Exactly one leader: the first node takes the lock, the second follows.
    let a = start(&env_a);
    until(Duration::from_secs(20), "node a leads", || leads(&a)).await;
    let b = start(&env_b);
    until(Duration::from_secs(20), "node b registered", || {
        nodes(&env_a)["nodes"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(leads(&a) && !leads(&b), "exactly one leader");
    assert_eq!(b.metric("televibe_cluster_nodes "), Some(2.0));
    assert_eq!(a.metric("televibe_cluster_nodes "), Some(2.0));
    let view = nodes(&env_b);
    assert_eq!(view["leader"], "a", "{view}");
    assert_eq!(view["this_node"], "b");
    assert!(
        view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "up"),
        "{view}"
    );
    let tree = String::from_utf8_lossy(&env_b.run(&["admin", "tree"]).stdout).to_string();
    assert!(tree.contains("node:b (follower)"), "{tree}");
    assert!(
        !tree.contains("telegram"),
        "a follower runs no Telegram front: {tree}"
    );

    // A project registered by path on b lives there; a session from the phone (the leader's front) is
    // placed on b.
    make_repo(&env_b.root().join("repos/app"));
    let mcp_b = Mcp::connect(&env_b).await;
    mcp_b
        .call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    tg.say(USER, "/start", "TeleVibeCode", Duration::from_secs(20))
        .await;
    tg.say(
        USER,
        "/new app",
        "Session <b>S1</b>",
        Duration::from_secs(60),
    )
    .await;
    let mcp_a = Mcp::connect(&env_a).await;
    let s1 = mcp_a
        .call("get_session", json!({"session_id": "S1"}))
        .await
        .unwrap();
    assert_eq!(s1["node"], "b", "{s1}");
    let wt = std::path::PathBuf::from(s1["worktree_path"].as_str().unwrap());
    assert!(wt.starts_with(env_b.root()), "the worktree is on b: {s1}");

    // A job on the follower, approved from the phone: the request goes out through the leader, the tap
    // reaches the job on b, the result reaches the chat once.
    tg.send_text(USER, "write hello");
    until(Duration::from_secs(90), "an approval message", || {
        tg.messages(USER)
            .iter()
            .any(|m| m.text.contains("Approval needed"))
    })
    .await;
    let msg = tg
        .messages(USER)
        .into_iter()
        .find(|m| m.text.contains("Approval needed"))
        .unwrap();
    let approve = msg.markup["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .unwrap()
        .to_string();
    tg.tap(USER, USER, msg.message_id, &approve);
    until(Duration::from_secs(90), "the job's tracker done", || {
        trackers_done(&tg, "write hello") == 1
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(wt.join("hello.txt")).unwrap(),
        "hello\n"
    );
    let jobs = mcp_a
        .call("list_jobs", json!({"session_id": "S1"}))
        .await
        .unwrap();
    assert_eq!(jobs["jobs"][0]["status"], "done", "{jobs}");

    // An instruction queued just before the leader is killed with -9.
    let before = helps(&tg);
    tg.send_text(USER, "STATUS after the kill");
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    let mut a = a;
    a.wait_exit(Duration::from_secs(10));
    until(Duration::from_secs(30), "node b leads", || leads(&b)).await;
    let took = killed.elapsed();
    eprintln!(
        "failover: node b leads {:.2} s after the leader was killed",
        took.as_secs_f64()
    );
    assert!(took <= Duration::from_secs(10), "failover took {took:?}");
    tg.say(USER, "/start", "TeleVibeCode", Duration::from_secs(20))
        .await;
    until(
        Duration::from_secs(120),
        "the queued instruction done",
        || trackers_done(&tg, "STATUS after the kill") == 1,
    )
    .await;
    // Messages go out in order: once a later reply arrived, a repeat would have too.
    tg.say(USER, "/sessions", "S1", Duration::from_secs(20))
        .await;
    assert_eq!(helps(&tg), before + 1, "/start answered once");
    assert_eq!(trackers_done(&tg, "STATUS after the kill"), 1, "done once");
    assert_eq!(
        trackers_done(&tg, "write hello"),
        1,
        "the earlier result not sent again"
    );
    let done = mcp_b
        .call("list_jobs", json!({"session_id": "S1"}))
        .await
        .unwrap();
    assert_eq!(
        done["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["status"] == "done")
            .count(),
        2,
        "{done}"
    );

    // The killed node comes back as a follower.
    drop(mcp_a);
    let a = start(&env_a);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!leads(&a) && leads(&b), "a rejoins as a follower");
    let view = nodes(&env_a);
    assert_eq!(view["leader"], "b", "{view}");
    assert_eq!(
        view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["state"] == "up")
            .count(),
        2,
        "{view}"
    );
    tg.assert_never_flood_limited();
    drop((a, b, mcp_b));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_node_has_its_running_job_queued_again_and_runs_it_when_back() {
    let pg = Postgres::start();
    let agent = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh");
    let env_for = |node: &str| {
        Env::new(&format!(
            "[store]\nurl = \"{}\"\n[cluster]\nnode_id = \"{node}\"\nheartbeat_secs = 1\nnode_timeout_secs = 5\n\
             [agent]\ncommand = \"{agent}\"\n",
            pg.url()
        ))
    };
    let (env_a, env_b) = (env_for("a"), env_for("b"));
    let a = env_a.start();
    until(Duration::from_secs(20), "node a leads", || leads(&a)).await;
    let b = env_b.start();
    make_repo(&env_b.root().join("repos/app"));
    let mcp_b = Mcp::connect(&env_b).await;
    mcp_b
        .call("register_project", json!({"path": "app"}))
        .await
        .unwrap();
    let mcp_a = Mcp::connect(&env_a).await;
    // The project lives on b: asking for a session on a is refused, and nothing is created.
    let refused = mcp_a
        .refused(
            "create_session",
            json!({"project_id": "app", "node": "a"}),
            "NODE_UNAVAILABLE",
        )
        .await;
    assert!(
        refused.message.contains("registered by path on node b"),
        "{}",
        refused.message
    );
    let s = mcp_a
        .call("create_session", json!({"project_id": "app", "node": "b"}))
        .await
        .unwrap();
    assert_eq!(s["node"], "b", "{s}");
    let job = mcp_a
        .call(
            "run_instruction",
            json!({"session_id": s["id"], "instruction": "interruptible work"}),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    until_async(Duration::from_secs(30), "the job runs on b", || async {
        mcp_a.call("get_job", json!({"job_id": job})).await.unwrap()["status"] == "running"
    })
    .await;
    drop(mcp_b);
    b.signal(libc::SIGKILL);
    let mut b = b;
    b.wait_exit(Duration::from_secs(10));
    // No heartbeat for node_timeout_secs: b is lost, its running job queued again once.
    until(Duration::from_secs(30), "b marked lost", || {
        node_is(&env_a, "b", "lost")
    })
    .await;
    let j = mcp_a.call("get_job", json!({"job_id": job})).await.unwrap();
    assert_eq!(j["status"], "queued", "{j}");
    assert_eq!(j["interruptions"], 1, "{j}");
    let gone = mcp_a
        .call("get_session", json!({"session_id": s["id"]}))
        .await
        .unwrap();
    assert!(
        gone["unavailable"]
            .as_str()
            .unwrap_or("")
            .contains("node b is gone"),
        "{gone}"
    );
    assert_eq!(a.metric("televibe_cluster_nodes "), Some(1.0));
    mcp_a
        .refused(
            "create_session",
            json!({"project_id": "app", "node": "b"}),
            "NODE_UNAVAILABLE",
        )
        .await;
    // Back: b registers again and runs what was queued for it, resuming the conversation.
    let b = env_b.start();
    until_async(Duration::from_secs(60), "the job done on b", || async {
        mcp_a.call("get_job", json!({"job_id": job})).await.unwrap()["status"] == "done"
    })
    .await;
    let j = mcp_a.call("get_job", json!({"job_id": job})).await.unwrap();
    assert!(
        j["result_text"]
            .as_str()
            .unwrap_or("")
            .contains("finished after the restart"),
        "{j}"
    );
    let back = mcp_a
        .call("get_session", json!({"session_id": s["id"]}))
        .await
        .unwrap();
    assert!(back.get("unavailable").is_none(), "{back}");
    drop((a, b, mcp_a));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_taken_for_gone_stops_rather_than_run_its_jobs_twice() {
    let pg = Postgres::start();
    let env_for = |node: &str| {
        Env::new(&format!(
            "[store]\nurl = \"{}\"\n[cluster]\nnode_id = \"{node}\"\nheartbeat_secs = 1\nnode_timeout_secs = 3",
            pg.url()
        ))
    };
    let (env_a, env_b) = (env_for("a"), env_for("b"));
    let a = env_a.start();
    until(Duration::from_secs(20), "node a leads", || leads(&a)).await;
    let mut b = env_b.start();
    until(Duration::from_secs(20), "node b up", || {
        nodes(&env_a)["nodes"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    // Paused (a long stop, a cut network): no heartbeat, so the leader takes it for gone.
    b.signal(libc::SIGSTOP);
    until(Duration::from_secs(30), "b marked lost", || {
        node_is(&env_a, "b", "lost")
    })
    .await;
    b.signal(libc::SIGCONT);
    let status = b.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(4), "{}", b.stderr_text());
    assert!(
        b.stderr_text().contains("taken for gone"),
        "{}",
        b.stderr_text()
    );
    // Started again, it is a node like any other.
    let b = env_b.start();
    until(Duration::from_secs(20), "b up again", || {
        nodes(&env_a)["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "up")
    })
    .await;
    assert!(leads(&a) && !leads(&b));
    // Another machine or root under a running node's name is refused at start, changing nothing.
    let twin = env_for("a");
    let out = twin.run(&["serve"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("taken by another running node"), "{err}");
    assert!(leads(&a) && node_is(&env_b, "a", "up"));
    drop((a, b));
}

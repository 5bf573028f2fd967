//! The store on PostgreSQL, on a throwaway cluster whatever `TELEVIBE_TEST_STORE` says: the migrations apply
//! (and again change nothing), every record round-trips with its types, numbers taken by two processes at
//! once never collide, a lost server puts the store read-only (`io_error`) until the probe write finds it
//! back, and a daemon on PostgreSQL runs a real job to its end.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::json;
use televibe::domain::{
    Approval, ApprovalState, AuditRecord, JobOutcome, JobStatus, NewSession, Project, SessionState,
};
use televibe::store::{
    Engine, NewSchedule, ReadOnlyCause, ScheduleRun, ScheduleRunOutcome, Store, StoreError,
    StoreLocation, TABLES,
};
use televibe::telemetry::Metrics;

use crate::fake_model::{FakeModel, Reply, after_tool};
use crate::harness::*;
use crate::pg::PgCluster;

fn location(pg: &PgCluster, password: Option<&str>) -> StoreLocation {
    StoreLocation::Postgres {
        url: pg.url(),
        password: password.map(str::to_string),
    }
}

async fn open(pg: &PgCluster) -> Store {
    Store::open_at(
        &location(pg, None),
        Default::default(),
        Arc::new(Metrics::new()),
    )
    .await
    .unwrap()
}

/// A project and its session S<n>, as the services write them.
async fn project_and_session(store: &Store) -> String {
    store
        .insert_project(&Project {
            id: "app".into(),
            name: "app".into(),
            repo_path: "/repos/app".into(),
            default_branch: "main".into(),
            remote_url: Some("https://example.com/app.git".into()),
            created_at: Utc::now(),
            trusted: true,
            node: Some("n1".into()),
        })
        .await
        .unwrap();
    let seq = store.next_session_seq().await.unwrap();
    let s = store
        .insert_session(
            seq,
            &NewSession {
                project_id: "app".into(),
                branch: "televibe/S1".into(),
                base_branch: "main".into(),
                branch_created: true,
                workspace_dir: "/ws/app".into(),
                agent: "claude".into(),
                node: Some("n1".into()),
            },
        )
        .await
        .unwrap();
    s.id
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_apply_and_every_record_round_trips() {
    let pg = PgCluster::start();
    let store = open(&pg).await;
    assert_eq!(store.engine(), Engine::Postgres);
    assert!(store.is_postgres());
    let tables = store.table_names().await.unwrap();
    for t in TABLES.iter().chain(&["seaql_migrations"]) {
        assert!(tables.contains(&t.to_string()), "{t} missing: {tables:?}");
    }
    store.integrity_check().await.unwrap();
    store.close().await;
    // Opening again applies nothing and keeps the schema.
    let store = open(&pg).await;
    assert_eq!(store.table_names().await.unwrap(), tables);

    // Projects and sessions: booleans, timestamps, the sequence's numbers.
    let sid = project_and_session(&store).await;
    let p = store.project("app").await.unwrap().unwrap();
    assert!(p.trusted);
    assert_eq!(p.remote_url.as_deref(), Some("https://example.com/app.git"));
    assert_eq!(p.node.as_deref(), Some("n1"));
    store.set_project_trusted("app", false).await.unwrap();
    assert!(!store.project("app").await.unwrap().unwrap().trusted);
    let s = store.session(&sid).await.unwrap().unwrap();
    assert!(s.branch_created && !s.worktree_missing);
    assert_eq!(s.state, SessionState::Idle);
    store.set_worktree_missing(&sid, true).await.unwrap();
    store
        .set_session_state(&sid, SessionState::Running)
        .await
        .unwrap();
    let s = store.session(&sid).await.unwrap().unwrap();
    assert!(s.worktree_missing);
    assert_eq!(s.state, SessionState::Running);
    let all: std::collections::BTreeMap<String, String> =
        [("codex".to_string(), "c-1".to_string())].into();
    store
        .set_conversation_id(&sid, "codex", Some("c-1"), &all)
        .await
        .unwrap();
    store
        .set_conversation_id(&sid, "claude", Some("k-1"), &all)
        .await
        .unwrap();
    store.set_session_agent(&sid, "codex").await.unwrap();
    let s = store.session(&sid).await.unwrap().unwrap();
    assert_eq!(s.conversation("codex"), Some("c-1"));
    assert_eq!(s.conversation_id.as_deref(), Some("k-1"));
    assert_eq!(s.agent, "codex");
    assert_eq!(store.count_open_sessions(Some("app")).await.unwrap(), 1);
    // The sequence only moves up, and past a number given by hand.
    let next = store.next_session_seq().await.unwrap();
    store.raise_session_counter(next + 10).await.unwrap();
    assert_eq!(store.next_session_seq().await.unwrap(), next + 11);
    store.raise_session_counter(2).await.unwrap();
    assert_eq!(store.next_session_seq().await.unwrap(), next + 12);

    // Jobs: the FIFO sequence, 32- and 64-bit integers, a float, a boolean, timestamps.
    let job = store
        .insert_job("j1", &sid, "do it", "claude")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    let j2 = store
        .insert_job("j2", &sid, "then this", "claude")
        .await
        .unwrap()
        .unwrap();
    let queued: Vec<String> = store
        .queued_jobs(&sid)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(queued, ["j1", "j2"]);
    assert_eq!(
        store.sessions_with_waiting_jobs().await.unwrap(),
        [sid.as_str()]
    );
    assert!(
        store
            .mark_job_running("j1", Some(4242), "/logs/j1.log", Some("abc".into()))
            .await
            .unwrap()
    );
    store.job_heartbeat("j1").await.unwrap();
    store.set_job_waiting("j1", true).await.unwrap();
    assert_eq!(
        store.job("j1").await.unwrap().unwrap().status,
        JobStatus::WaitingApproval
    );
    store.set_job_waiting("j1", false).await.unwrap();
    assert_eq!(store.active_jobs_of_session(&sid).await.unwrap(), 1);
    let later = Utc::now() + TimeDelta::hours(1);
    assert!(
        store
            .requeue_job("j1", Some(later), televibe::store::Requeue::UsageLimit)
            .await
            .unwrap()
    );
    let j = store.job("j1").await.unwrap().unwrap();
    assert_eq!((j.limit_waits, j.pid), (1, None));
    assert_eq!(
        j.not_before.map(|t| t.timestamp_micros()),
        Some(later.timestamp_micros())
    );
    store
        .mark_job_running("j1", Some(4243), "/logs/j1.log", None)
        .await
        .unwrap();
    store.job_exited("j1", Some(3), Some(9)).await.unwrap();
    let j = store.job("j1").await.unwrap().unwrap();
    assert_eq!((j.exit_code, j.signal), (Some(3), Some(9)));
    assert!(
        store
            .finish_job(
                "j1",
                JobOutcome {
                    status: Some(JobStatus::Done),
                    exit_code: Some(0),
                    is_error: Some(false),
                    result_text: Some("ok".into()),
                    num_turns: Some(2),
                    total_cost_usd: Some(0.125),
                    input_tokens: Some(5_000_000_000),
                    output_tokens: Some(7),
                    model_api_status: Some(529),
                    permission_denials: Some(1),
                    files_changed: vec!["a.txt".into()],
                    diff_stat: Some("1 file".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    );
    let j = store.job("j1").await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Done);
    assert_eq!((j.exit_code, j.signal, j.pgid), (Some(0), None, Some(4243)));
    assert_eq!(j.is_error, Some(false));
    assert_eq!(j.total_cost_usd, Some(0.125));
    assert_eq!(j.input_tokens, Some(5_000_000_000));
    assert_eq!(j.model_api_status, Some(529));
    assert_eq!(j.files_changed, ["a.txt"]);
    assert!(j.finished_at.is_some() && j.started_at.is_some());
    assert!(!store.finish_job("j1", JobOutcome::default()).await.unwrap());
    assert_eq!(store.jobs_by_prefix("j").await.unwrap().len(), 2);
    let newest: Vec<String> = store
        .jobs(Some(&sid), None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(newest, ["j2", "j1"]);
    assert_eq!(
        store
            .jobs_before(None, None, 10, Some("j2"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.unfinished_running_jobs().await.unwrap().len(),
        0,
        "{j2:?}"
    );

    // Approvals and grants.
    let now = Utc::now();
    store
        .insert_approval(&Approval {
            id: "a1".into(),
            job_id: "j2".into(),
            session_id: sid.clone(),
            tool_name: "Bash".into(),
            tool_input: json!({"command": "ls"}),
            tool_use_id: Some("tu1".into()),
            scope: "shell".into(),
            state: ApprovalState::Pending,
            decision: None,
            decided_by: None,
            requested_at: now,
            decided_at: None,
            expires_at: now + TimeDelta::minutes(10),
            telegram_chat_id: None,
            telegram_message_id: None,
        })
        .await
        .unwrap();
    assert_eq!(store.pending_approvals().await.unwrap().len(), 1);
    store
        .set_approval_message("a1", -1_001_234_567_890, 77)
        .await
        .unwrap();
    assert!(
        store
            .decide_approval("a1", ApprovalState::Approved, "approve_once", "tg:1")
            .await
            .unwrap()
    );
    assert!(
        !store
            .decide_approval("a1", ApprovalState::Denied, "deny", "tg:1")
            .await
            .unwrap()
    );
    let a = store.approval("a1").await.unwrap().unwrap();
    assert_eq!(a.state, ApprovalState::Approved);
    assert_eq!(a.telegram_chat_id, Some(-1_001_234_567_890));
    assert_eq!(a.tool_input, json!({"command": "ls"}));
    assert!(a.decided_at.is_some());
    assert!(
        store
            .expire_pending_approvals(Utc::now(), |_| true)
            .await
            .unwrap()
            .is_empty()
    );
    for _ in 0..2 {
        store
            .insert_grant(&sid, "Bash", "git status", "tg:1")
            .await
            .unwrap();
    }
    assert_eq!(
        store.grants(&sid).await.unwrap(),
        [("Bash".to_string(), "git status".to_string())]
    );

    // The outbox and the audit.
    let e1 = store
        .insert_event(
            "job.queued",
            Some("app"),
            Some(&sid),
            Some("j2"),
            json!({"n": 1}),
        )
        .await
        .unwrap();
    let e2 = store
        .insert_event("breaker.opened", None, None, None, json!({}))
        .await
        .unwrap();
    assert!(e2 > e1);
    let pending = store.undelivered_events(0, 10).await.unwrap();
    assert_eq!(pending.iter().map(|e| e.id).collect::<Vec<_>>(), [e1, e2]);
    assert_eq!(pending[0].payload, json!({"n": 1}));
    store.mark_delivered(&[e1]).await.unwrap();
    assert_eq!(store.undelivered_events(0, 10).await.unwrap().len(), 1);
    assert_eq!(store.reader_count_events("job.queued").await.unwrap(), 1);
    assert_eq!(store.events_of_job("j2").await.unwrap().len(), 1);
    assert_eq!(store.job_events_after("j2", 0).await.unwrap().len(), 1);
    store
        .insert_audit(&AuditRecord {
            event: "session.created".into(),
            actor: "mcp".into(),
            project_id: Some("app".into()),
            session_id: Some(sid.clone()),
            job_id: None,
            details: json!({"branch": "televibe/S1"}),
            timestamp: Utc::now() - TimeDelta::days(200),
        })
        .await
        .unwrap();
    assert_eq!(
        store.audit_events("session.created").await.unwrap(),
        [(
            "mcp".to_string(),
            Some("app".to_string()),
            Some(sid.clone())
        )]
    );

    // Schedules: the SC<n> ids, a run that queues its job in the same transaction, a skip, a removal.
    let next_run = Utc::now() + TimeDelta::minutes(5);
    let sc = store
        .insert_schedule(&NewSchedule {
            session_id: sid.clone(),
            cron: "*/5 * * * *".into(),
            instruction: "check".into(),
            agent: None,
            created_by: "tg:1".into(),
            next_run_at: next_run,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sc.id, "SC1");
    assert_eq!(sc.runs, 0);
    let queued = store
        .run_schedule(&ScheduleRun {
            schedule_id: "SC1".into(),
            runs: 0,
            occurrence: next_run,
            next_run_at: next_run + TimeDelta::minutes(5),
            job_id: "j3".into(),
            session_id: sid.clone(),
            instruction: "check".into(),
            agent: "claude".into(),
        })
        .await
        .unwrap();
    assert!(matches!(queued, ScheduleRunOutcome::Queued(ref j) if j.id == "j3"));
    let sc = store.schedule("SC1").await.unwrap().unwrap();
    assert_eq!((sc.runs, sc.last_job_id.as_deref()), (1, Some("j3")));
    assert!(
        store
            .skip_schedule_run("SC1", 1, next_run + TimeDelta::minutes(10))
            .await
            .unwrap()
    );
    assert!(store.remove_schedule("SC1", "tg:1", "done").await.unwrap());
    assert!(store.active_schedules(None).await.unwrap().is_empty());

    // Key-value rows, and the retention passes.
    store.kv_set("telegram.tracker.j1", "1:2").await.unwrap();
    store.kv_set("telegram.offset", "9").await.unwrap();
    assert_eq!(store.kv_count("telegram.").await.unwrap(), 2);
    store.kv_delete("telegram.offset").await.unwrap();
    assert_eq!(store.kv_get("telegram.offset").await.unwrap(), None);
    assert_eq!(
        store
            .delete_audit_before(Utc::now() - TimeDelta::days(90))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .prune_delivered_events(Utc::now() + TimeDelta::minutes(1))
            .await
            .unwrap(),
        1
    );
    // j1's outbox rows are delivered (it has none): it goes, with its tracker row.
    assert_eq!(
        store
            .prune_finished_jobs(Utc::now() + TimeDelta::minutes(1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.kv_get("telegram.tracker.j1").await.unwrap(), None);
    store.close().await;

    // A read-only open reads and refuses writes at the server.
    let ro = Store::open_read_only_at(&location(&pg, None), Arc::new(Metrics::new()))
        .await
        .unwrap();
    assert_eq!(ro.job("j2").await.unwrap().unwrap().id, "j2");
    assert!(ro.reader_count_events("job.queued").await.is_ok());
    ro.execute_unchecked("INSERT INTO kv(key, value, updated_at) VALUES ('x', 'y', 'z')")
        .await
        .expect_err("a read-only connection takes no write");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_never_take_the_same_number() {
    let pg = PgCluster::start();
    let (a, b) = (open(&pg).await, open(&pg).await);
    let sid = project_and_session(&a).await;
    // Jobs, outbox rows and session numbers taken at once from two pools.
    let take = |store: Store, side: &'static str| {
        let sid = sid.clone();
        tokio::spawn(async move {
            let mut sessions = Vec::new();
            for i in 0..25 {
                store
                    .insert_job(&format!("{side}{i}"), &sid, "x", "claude")
                    .await
                    .unwrap()
                    .unwrap();
                store
                    .insert_event("job.queued", None, Some(&sid), None, json!({}))
                    .await
                    .unwrap();
                sessions.push(store.next_session_seq().await.unwrap());
            }
            sessions
        })
    };
    let (sa, sb) = (take(a.clone(), "a"), take(b.clone(), "b"));
    let mut numbers = sa.await.unwrap();
    numbers.extend(sb.await.unwrap());
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), 50, "a session number was given twice");
    let jobs = a.jobs(None, None, 100).await.unwrap();
    assert_eq!(jobs.len(), 50);
    let events = a.undelivered_events(0, 100).await.unwrap();
    assert_eq!(events.len(), 50);
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_server_makes_the_store_read_only_until_the_probe_finds_it_back() {
    let pg = PgCluster::start();
    // Trust authentication takes any password; it must show nowhere all the same.
    let secret = "pg-Secret-7781";
    let store = Store::open_at(
        &location(&pg, Some(secret)),
        Default::default(),
        Arc::new(Metrics::new()),
    )
    .await
    .unwrap();
    assert!(store.connect_url().unwrap().contains(secret));
    assert!(!format!("{:?}", store.location()).contains(secret));
    store.kv_set("k", "before").await.unwrap();
    pg.stop();
    let err = store.kv_set("k", "during").await.unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
    assert!(store.is_read_only());
    assert_eq!(store.read_only_cause(), Some(ReadOnlyCause::IoError));
    let reason = store.read_only_reason().unwrap();
    assert!(
        !reason.contains(secret) && !err.to_string().contains(secret),
        "{reason}"
    );
    assert!(store.probe_write().await.is_err());
    assert!(store.is_read_only());
    // The same port again: the pool reconnects by itself and the probe lifts read-only mode.
    pg.start_server();
    until_async(
        Duration::from_secs(30),
        "the probe write succeeds",
        || async { store.probe_write().await.is_ok() },
    )
    .await;
    assert!(!store.is_read_only());
    assert_eq!(store.read_only_cause(), None);
    store.kv_set("k", "after").await.unwrap();
    assert_eq!(store.kv_get("k").await.unwrap().as_deref(), Some("after"));
    // A server that is not there at all: the open fails, naming the URL and never the password.
    pg.stop();
    let err = Store::open_at(
        &location(&pg, Some(secret)),
        Default::default(),
        Arc::new(Metrics::new()),
    )
    .await
    .err()
    .expect("nothing listens");
    let text = err.to_string();
    assert!(text.contains(&pg.url()) && !text.contains(secret), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_on_postgresql_runs_a_real_job_to_its_end() {
    let claude = claude_cli();
    let env = Env::new_postgres("");
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let target = env
        .root()
        .join("workspaces/app/S1/pg.txt")
        .display()
        .to_string();
    let model = FakeModel::start(move |req| {
        if after_tool(req) {
            Reply::Text("Wrote pg.txt.".into())
        } else {
            Reply::ToolUse {
                name: "Write".into(),
                input: json!({"file_path": target, "content": "on postgres\n"}),
            }
        }
    })
    .await;
    env.write_config(&crate::jobs::real_claude_config(&claude, &model, &home, ""));
    let config = std::fs::read_to_string(env.config()).unwrap();
    assert!(config.contains("url = \"postgres://"), "{config}");
    let d = env.start();
    let mcp = Mcp::connect(&env).await;
    let wt = crate::jobs::session(&env, &mcp).await;
    let id = crate::jobs::run(&mcp, "S1", "write pg.txt").await;
    let job = crate::jobs::wait_final(&mcp, &id, Duration::from_secs(90)).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(
        std::fs::read_to_string(wt.join("pg.txt")).unwrap(),
        "on postgres\n"
    );
    // The record is the server's: no state file under the root.
    assert!(!env.orchestrator().join("state.db").exists());
    let store = env.store_read_only().await;
    let kinds: Vec<String> = store
        .events_of_job(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(kinds.contains(&"job.completed".to_string()), "{kinds:?}");
    assert_eq!(
        store.job(&id).await.unwrap().unwrap().status,
        JobStatus::Done
    );
    let (status, body) = d.get("/health/ready");
    assert_eq!(status, 200, "{body}");
    // Backups are the operator's own here: the command says so.
    let out = env.run(&["backup", "now"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pg_dump"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(mcp);
    d.stop();
}

//! Retention on the real daemon: the janitor's first pass after a start removes rotated daemon logs, job logs and
//! audit records (file and table) past their configured days, and keeps everything younger, with back-dated files.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::harness::*;

const DAY: Duration = Duration::from_secs(86_400);

/// A file written now, then dated `age` ago.
fn planted(path: &Path, age: Duration) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"planted\n").unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

fn audit_line(at: chrono::DateTime<chrono::Utc>, event: &str) -> String {
    format!(
        "{{\"timestamp\":\"{}\",\"event\":\"{event}\",\"actor\":\"test\",\"details\":{{}}}}\n",
        at.format("%Y-%m-%dT%H:%M:%S%.3fZ")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_removes_what_is_past_its_days_and_keeps_the_rest() {
    let env = Env::new(
        "[logging]\nretention_days = 2\njob_log_retention_days = 1\naudit_retention_days = 3\n",
    );
    // A first start creates the layout and the database; the planting happens while it is stopped.
    assert!(env.start().stop().success());
    let logs = env.orchestrator().join("logs");
    let now = chrono::Utc::now();
    planted(&logs.join("orchestrator.log.2026-01-01"), 5 * DAY);
    planted(&logs.join("orchestrator.log.2026-01-02"), DAY);
    planted(&logs.join("jobs/0123-old.log"), 2 * DAY);
    planted(&logs.join("jobs/0123-new.log"), Duration::ZERO);
    planted(&logs.join("notes.txt"), 30 * DAY);
    let mut audit = std::fs::read_to_string(logs.join("audit.log")).unwrap_or_default();
    audit.push_str(&audit_line(now - chrono::Duration::days(10), "test.old"));
    audit.push_str(&audit_line(now - chrono::Duration::days(1), "test.recent"));
    std::fs::write(logs.join("audit.log"), audit).unwrap();
    {
        let store = env.store().await;
        for (days, event) in [(10, "test.old"), (1, "test.recent")] {
            store
                .insert_audit(&televibe::domain::AuditRecord {
                    event: event.into(),
                    actor: "test".into(),
                    project_id: None,
                    session_id: None,
                    job_id: None,
                    details: serde_json::json!({}),
                    timestamp: now - chrono::Duration::days(days),
                })
                .await
                .unwrap();
        }
    }

    let d = env.start();
    let gone = |p: &Path| !p.exists();
    eventually(Duration::from_secs(60), "the janitor's first pass", || {
        gone(&logs.join("orchestrator.log.2026-01-01"))
            && gone(&logs.join("jobs/0123-old.log"))
            && !std::fs::read_to_string(logs.join("audit.log"))
                .unwrap()
                .contains("test.old")
    });
    assert!(
        logs.join("orchestrator.log.2026-01-02").exists(),
        "younger than retention_days"
    );
    assert!(
        logs.join("jobs/0123-new.log").exists(),
        "a fresh job log stays"
    );
    assert!(
        logs.join("notes.txt").exists(),
        "files that are not logs are never touched"
    );
    assert!(logs.join("orchestrator.log").exists(), "the live log stays");
    let audit = std::fs::read_to_string(logs.join("audit.log")).unwrap();
    assert!(audit.contains("test.recent"), "{audit}");
    let store = env.store_read_only().await;
    eventually(Duration::from_secs(10), "old audit rows deleted", || {
        futures_block(store.audit_events("test.old"))
            .unwrap()
            .is_empty()
    });
    assert_eq!(
        futures_block(store.audit_events("test.recent"))
            .unwrap()
            .len(),
        1
    );
    eventually(Duration::from_secs(10), "the pass is logged", || {
        d.stderr_text()
            .contains("Removed audit records past retention")
    });
    drop(d);
}

/// Runs a store query from a synchronous condition.
fn futures_block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

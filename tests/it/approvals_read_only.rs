//! The store turns read-only (a full disk) while approvals are pending: no decision and no expiry is lost.
//! A person's answer (a Telegram tap, MCP `approve`) is refused while it cannot be recorded, the expiry
//! waits for writes to work again, and afterwards a person's answer is handled and an unanswered request
//! expires.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_telegram::{FakeTelegram, TOKEN};
use crate::harness::*;
use crate::jobs::{run, wait_final, wait_status};

const USER: i64 = 4242;
const FAKE_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh");

/// A 3 MiB tmpfs, unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::Builder::new()
            .prefix("tvdisk")
            .tempdir_in("/tmp")
            .unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount(8)");
        assert!(
            status.success(),
            "this drill mounts a small tmpfs (needs root, as CI has)"
        );
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

async fn pending_ids(mcp: &Mcp) -> Vec<String> {
    mcp.call("list_pending_approvals", json!({})).await.unwrap()["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

/// The pending approval of `job`.
async fn approval_of(mcp: &Mcp, job: &str) -> String {
    let mut found = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while found.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "job {job} never asked"
        );
        let pending = mcp.call("list_pending_approvals", json!({})).await.unwrap();
        found = pending["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["job_id"] == job)
            .map(|a| a["id"].as_str().unwrap().to_string());
        if found.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    found.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_pending_while_the_store_turns_read_only_are_not_lost() {
    let disk = SmallDisk::mount();
    let tg = FakeTelegram::start().await;
    let env = Env::new(&format!(
        "[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n\
         [approvals]\ntimeout_secs = 10\n[store]\nread_only_probe_secs = 1\n\
         [telegram]\napi_url = \"{}\"\nallowed_users = [{USER}]\n",
        tg.url()
    ));
    let root = disk.0.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(&root, env.root()).unwrap();
    let d = env.start_with(|c| {
        c.env("TELEVIBE_TELEGRAM__TOKEN", TOKEN);
    });
    // The user has talked to the bot, so it may write to them.
    tg.send_text(USER, "/help");
    until(Duration::from_secs(20), "the bot answers", || {
        !tg.messages(USER).is_empty()
    })
    .await;
    let mcp = Mcp::connect(&env).await;
    crate::jobs::session(&env, &mcp).await;
    for _ in 0..2 {
        mcp.call("create_session", json!({"project_id": "app"}))
            .await
            .unwrap();
    }
    // Two jobs wait for a person: S1's will be answered, S2's not.
    let answered = run(&mcp, "S1", "ask-approval").await;
    let unanswered = run(&mcp, "S2", "ask-approval").await;
    let a = approval_of(&mcp, &answered).await;
    let b = approval_of(&mcp, &unanswered).await;
    // The person's approval message with its buttons (in the allowed user's chat).
    let approve = format!("ap:{a}:a");
    until(Duration::from_secs(20), "the approval message", || {
        tg.messages(USER)
            .iter()
            .any(|m| m.markup.to_string().contains(&approve))
    })
    .await;
    let message = tg
        .messages(USER)
        .into_iter()
        .find(|m| m.markup.to_string().contains(&approve))
        .unwrap()
        .message_id;

    // The disk fills up; S3's writes go on until one fails and the store turns read-only.
    let filler = disk.0.path().join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let big = "x".repeat(10_000);
    let mut read_only = false;
    for _ in 0..500 {
        match mcp
            .call(
                "run_instruction",
                json!({"session_id": "S3", "instruction": big}),
            )
            .await
        {
            Err(e) if e.code == "READ_ONLY" => {
                read_only = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(read_only, "a write fails once the disk is full");
    assert_eq!(
        pending_ids(&mcp).await.len(),
        2,
        "both still pending when the store turned read-only (approvals.timeout_secs too short?)"
    );

    // A person's answer cannot be recorded: refused, and the request stays as it was. On Telegram the
    // tap is answered with why, not as an expired button.
    let tap = tg.tap(USER, USER, message, &approve);
    until(Duration::from_secs(20), "the refused tap answered", || {
        tg.answered_callbacks()
            .iter()
            .any(|(id, t)| *id == tap && t.contains("read-only mode") && t.contains("tap again"))
    })
    .await;
    let refused = mcp
        .refused("approve", json!({"approval_id": a}), "READ_ONLY")
        .await;
    assert!(
        refused.message.contains("read-only mode"),
        "{}",
        refused.message
    );
    // Both expiries come while writes are disabled: postponed, not applied and not lost.
    eventually(Duration::from_secs(30), "both expiries postponed", || {
        d.stderr_text().matches("Approval expiry postponed").count() >= 2
    });
    let mut pending = pending_ids(&mcp).await;
    pending.sort();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(pending, both);
    for job in [&answered, &unanswered] {
        let j = mcp.call("get_job", json!({"job_id": job})).await.unwrap();
        assert_eq!(j["status"], "waiting_approval", "{j}");
    }

    // Space comes back: the store leaves read-only mode by itself.
    std::fs::remove_file(&filler).unwrap();
    eventually(Duration::from_secs(20), "ready again", || {
        d.get("/health/ready").0 == 200
    });
    // The person's answer now is handled: the job goes on with the tool allowed.
    let tap = tg.tap(USER, USER, message, &approve);
    until(Duration::from_secs(20), "the tap recorded", || {
        tg.answered_callbacks()
            .iter()
            .any(|(id, t)| *id == tap && t.contains("approved"))
    })
    .await;
    let done = wait_final(&mcp, &answered, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "done", "{done}");
    assert!(
        done["result_text"]
            .as_str()
            .is_some_and(|t| t.contains("allow")),
        "{done}"
    );
    // The unanswered one expires after its grace: denied with interrupt, its job canceled.
    let expired: Value = wait_status(&mcp, &unanswered, Duration::from_secs(40), |s| {
        ["done", "failed", "canceled"].contains(&s)
    })
    .await;
    assert_eq!(expired["status"], "canceled", "{expired}");
    assert_eq!(expired["error_type"], "approval_timeout", "{expired}");
    assert!(pending_ids(&mcp).await.is_empty());
    tg.assert_never_flood_limited();
    drop(mcp);
    assert!(d.stop().success());
}

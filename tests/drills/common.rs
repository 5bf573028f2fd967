//! What the drills share: a daemon with the fake Bot API, the phone's view of results, timing helpers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_telegram::{FakeTelegram, TOKEN};
use crate::harness::*;

pub const USER: i64 = 5151;
pub const FAKE_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-agent.sh");

/// A config talking to the fake Bot API, with `USER` allowed and as the admin chat.
pub fn tg_config(tg: &FakeTelegram, extra: &str) -> String {
    format!(
        "[telegram]\napi_url = \"{}\"\nallowed_users = [{USER}]\nadmin_chat_id = {USER}\n{extra}",
        tg.url()
    )
}

pub fn fake_agent(extra_jobs: &str) -> String {
    format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n[jobs]\nkill_grace_secs = 1\n{extra_jobs}")
}

/// Starts the daemon with the bot token and waits until it is live.
pub fn start(env: &Env) -> Daemon {
    env.start_with(|c| {
        c.env("TELEVIBE_TELEGRAM__TOKEN", TOKEN);
    })
}

/// Waits until `/health/ready` answers 200.
pub fn wait_ready(d: &Daemon, limit: Duration) {
    eventually(limit, "readiness 200", || d.get("/health/ready").0 == 200);
}

/// The user says `text` and waits for a reply containing `expect`.
pub async fn say(tg: &FakeTelegram, text: &str, expect: &str) {
    tg.say(USER, text, expect, Duration::from_secs(30)).await;
}

/// Registers `repos/app` and opens `sessions` sessions from the phone (their results go to the phone).
pub async fn phone_sessions(env: &Env, tg: &FakeTelegram, sessions: usize) {
    make_repo(&env.root().join("repos/app"));
    say(tg, "/register app", "Registered").await;
    for _ in 0..sessions {
        say(tg, "/new app", "Session <b>S").await;
    }
}

/// The newest message to the user containing `needle`, as the phone shows it.
pub fn last_reply_with(tg: &FakeTelegram, needle: &str) -> String {
    tg.messages(USER)
        .into_iter()
        .rev()
        .find(|m| m.text.contains(needle))
        .map(|m| m.visible)
        .unwrap_or_default()
}

pub async fn run(mcp: &Mcp, session: &str, instruction: &str) -> String {
    let q = mcp
        .call(
            "run_instruction",
            json!({"session_id": session, "instruction": instruction}),
        )
        .await
        .unwrap();
    q["id"].as_str().unwrap().to_string()
}

pub async fn job(mcp: &Mcp, id: &str) -> Value {
    mcp.call("get_job", json!({"job_id": id})).await.unwrap()
}

pub async fn wait_status(mcp: &Mcp, id: &str, limit: Duration, want: &[&str]) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let j = job(mcp, id).await;
        if want.contains(&j["status"].as_str().unwrap_or("")) {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} not {want:?}: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_final(mcp: &Mcp, id: &str, limit: Duration) -> Value {
    wait_status(mcp, id, limit, &["done", "failed", "canceled"]).await
}

/// How many of the jobs' trackers on the phone are missing a final state, and how many jobs have more
/// than one tracker message.
pub fn deliveries(tg: &FakeTelegram, ids: &[String]) -> (usize, usize) {
    let msgs = tg.messages(USER);
    let mut lost = 0;
    let mut duplicated = 0;
    for id in ids {
        let mine: Vec<_> = msgs
            .iter()
            .filter(|m| m.text.contains(&format!("<b>Job {}", &id[..8])))
            .collect();
        if !mine
            .iter()
            .any(|m| ["✅", "❌", "🚫"].iter().any(|i| m.text.starts_with(i)))
        {
            lost += 1;
        }
        if mine.len() > 1 {
            duplicated += mine.len() - 1;
        }
    }
    (lost, duplicated)
}

/// Waits until every job's final state is on the phone.
pub async fn all_delivered(tg: &FakeTelegram, ids: &[String], limit: Duration) {
    until(limit, "every result on the phone", || {
        deliveries(tg, ids).0 == 0
    })
    .await;
}

/// A small tmpfs at `path`, unmounted when dropped (the drills run as root, as CI does).
pub struct SmallDisk(pub std::path::PathBuf);

impl SmallDisk {
    pub fn mount(path: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount(8)");
        assert!(
            status.success(),
            "this drill mounts a small tmpfs (needs root, as CI has)"
        );
        SmallDisk(path.to_path_buf())
    }

    /// Fills the disk; returns the filler file.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

//! Voice notes, photos and documents sent from the phone: the fake Bot API delivers them as Telegram does
//! and serves `getFile` and the downloads, a fake transcription endpoint checks what it is sent, and the
//! fake agent reads the saved file from inside its job.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_telegram::{FakeTelegram, TOKEN};
use crate::fake_transcriber::{Answer, FakeTranscriber};
use crate::harness::*;
use crate::telegram::{FAKE_AGENT, USER, say, telegram_config, texts};

/// The real voice note: "Add a README to the project".
const OGG: &[u8] = include_bytes!("../data/voice/add-readme.ogg");
const KEY: &str = "sk-voice-test-5b1e0c7d";
const STRANGER: i64 = 666;
const WAIT: Duration = Duration::from_secs(30);

struct Phone {
    tg: FakeTelegram,
    env: Env,
    d: Daemon,
    mcp: Mcp,
}

/// A daemon run by `user` with Telegram, the fake agent and `extra` configuration; the voice key is in its
/// environment. Project `app` is registered, no session is open.
async fn phone_as(user: DaemonUser, extra: &str) -> Phone {
    let tg = FakeTelegram::start().await;
    let mut env = Env::new("");
    env.run_as(user);
    env.write_config(&telegram_config(
        &tg,
        &format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n{extra}"),
    ));
    make_repo(&env.root().join("repos/app"));
    let d = env.start_with(|c| {
        c.env("TELEVIBE_TELEGRAM__TOKEN", TOKEN)
            .env("TELEVIBE_VOICE__API_KEY", KEY);
    });
    let mcp = Mcp::connect(&env).await;
    say(&tg, "/register app", "Registered").await;
    Phone { tg, env, d, mcp }
}

async fn phone(extra: &str) -> Phone {
    phone_as(DaemonUser::Own, extra).await
}

impl Phone {
    /// Opens session S1 (active in the user's chat); its worktree.
    async fn session(&self) -> PathBuf {
        say(&self.tg, "/new app", "Session <b>S1</b>").await;
        self.env.root().join("workspaces/app/S1")
    }

    /// Waits for a message to the user containing `expect`; its text.
    async fn told(&self, expect: &str) -> String {
        until(WAIT, &format!("a message containing {expect:?}"), || {
            texts(&self.tg).iter().any(|t| t.contains(expect))
        })
        .await;
        texts(&self.tg)
            .into_iter()
            .find(|t| t.contains(expect))
            .unwrap()
    }

    async fn jobs(&self) -> Vec<Value> {
        self.mcp.call("list_jobs", json!({})).await.unwrap()["jobs"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until `n` jobs exist and all have ended; them, oldest first.
    async fn ended_jobs(&self, n: usize) -> Vec<Value> {
        until_async(WAIT, &format!("{n} jobs ended"), || async {
            let jobs = self.jobs().await;
            jobs.len() == n
                && jobs.iter().all(|j| {
                    ["done", "failed", "canceled"].contains(&j["status"].as_str().unwrap())
                })
        })
        .await;
        let mut jobs = self.jobs().await;
        jobs.sort_by_key(|j| j["queued_at"].as_str().unwrap().to_string());
        jobs
    }

    fn get_file_calls(&self) -> usize {
        self.tg.calls_of("getFile").len()
    }
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Every byte value, `n` bytes.
fn binary(n: usize) -> Vec<u8> {
    (0..=255u8).cycle().take(n).collect()
}

fn voice_config(t: &FakeTranscriber, breaker: &str) -> String {
    format!(
        "[voice]\ntranscription_url = \"{}\"\nmodel = \"whisper-large-v3\"\n{breaker}",
        t.url()
    )
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_voice_note_is_transcribed_echoed_and_run_as_the_instruction() {
    let t = FakeTranscriber::start(Some(KEY), OGG.to_vec()).await;
    t.answer(Answer::Text("Add a README to the project".into()));
    t.answer(Answer::Text("print the env please".into()));
    let p = phone(&voice_config(&t, "")).await;
    p.session().await;
    let voice = p.tg.add_file("voice", "oga", OGG.to_vec());
    p.tg.send_voice(USER, &voice);
    p.told("🎤 Add a README to the project").await;
    let jobs = p.ended_jobs(1).await;
    assert_eq!(jobs[0]["instruction"], "Add a README to the project");
    assert_eq!(jobs[0]["status"], "done", "{}", jobs[0]);
    // The echo comes before the job's tracker.
    until(WAIT, "the job's tracker shows it done", || {
        texts(&p.tg)
            .iter()
            .any(|t| t.contains("<b>Job ") && t.contains("✅"))
    })
    .await;
    let msgs = p.tg.messages(USER);
    let echo = msgs
        .iter()
        .position(|m| m.text.starts_with("🎤 Add a README"));
    let tracker = msgs.iter().position(|m| m.text.contains("<b>Job "));
    assert!(echo < tracker, "{:?}", texts(&p.tg));
    let up = t.uploads();
    assert_eq!(up.len(), 1);
    assert!(up[0].problems.is_empty(), "{:?}", up[0].problems);
    assert_eq!(up[0].model.as_deref(), Some("whisper-large-v3"));
    assert_eq!(up[0].file, OGG, "the voice note, byte for byte");
    assert_eq!(p.tg.served().downloads, ["voice/file_1.oga"]);

    // The key reaches the endpoint only: not the job's environment, not the daemon's log.
    p.tg.send_voice(USER, &voice);
    p.told("🎤 print the env please").await;
    let jobs = p.ended_jobs(2).await;
    assert_eq!(jobs[1]["instruction"], "print the env please");
    let logs = p
        .mcp
        .call(
            "get_job_logs",
            json!({"job_id": jobs[1]["id"], "lines": 1000}),
        )
        .await
        .unwrap()
        .to_string();
    assert!(
        logs.contains("TELEVIBE_JOB_ID="),
        "the job printed its environment: {logs}"
    );
    assert!(!logs.contains(KEY), "the key is in the job's environment");
    let mut log = p.d.stderr_text();
    log.push_str(
        &std::fs::read_to_string(p.env.orchestrator().join("logs/orchestrator.log"))
            .unwrap_or_default(),
    );
    assert!(
        log.contains("Job finished"),
        "the daemon's log is read: {log}"
    );
    assert!(!log.contains(KEY), "the key is in the daemon's log");
    assert!(
        !log.contains("TEST-token"),
        "the bot token (in the download's address) is in the daemon's log"
    );
    assert!(t.uploads().iter().all(|u| u.problems.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_voice_off_a_voice_note_is_told_how_to_turn_it_on_and_fetches_nothing() {
    let p = phone("").await;
    p.session().await;
    let voice = p.tg.add_file("voice", "oga", OGG.to_vec());
    p.tg.send_voice(USER, &voice);
    let told = p.told("Voice notes are off").await;
    assert!(
        told.contains("<code>[voice] transcription_url</code>")
            && told.contains("TELEVIBE_VOICE__API_KEY"),
        "{told}"
    );
    // A stranger's voice note is refused as a stranger's text is, and fetched neither.
    p.tg.send_voice(STRANGER, &voice);
    until(WAIT, "the stranger is refused", || {
        p.tg.messages(STRANGER)
            .iter()
            .any(|m| m.text.contains("access denied"))
    })
    .await;
    say(&p.tg, "/help", "TeleVibeCode").await;
    assert_eq!(p.get_file_calls(), 0, "nothing was asked of getFile");
    assert!(p.tg.served().downloads.is_empty());
    assert!(p.jobs().await.is_empty(), "nothing ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_transcription_endpoint_is_told_and_opens_its_breaker() {
    let t = FakeTranscriber::start(Some(KEY), OGG.to_vec()).await;
    t.answer(Answer::Garbage);
    t.always(Answer::Status(500));
    let breaker = "[breakers.voice_transcription]\nfailure_threshold = 2\nsuccess_threshold = 1\n\
                   timeout_seconds = 300\nhalf_open_requests = 1\n";
    let p = phone(&voice_config(&t, breaker)).await;
    let voice = p.tg.add_file("voice", "oga", OGG.to_vec());
    // No session yet: the answer a typed instruction gets, and nothing fetched or sent.
    p.tg.send_voice(USER, &voice);
    p.told("no active session in this chat").await;
    assert_eq!((p.get_file_calls(), t.uploads().len()), (0, 0));

    p.session().await;
    p.tg.send_voice(USER, &voice);
    p.told("not a transcription").await;
    p.tg.send_voice(USER, &voice);
    let told = p.told("HTTP 500").await;
    assert!(told.contains("Nothing was run"), "{told}");
    assert_eq!(t.uploads().len(), 2);
    let gauge = "televibe_circuit_breaker_state{name=\"voice_transcription\"}";
    assert_eq!(p.d.metric(gauge), Some(0.0), "the breaker is open");
    p.tg.send_voice(USER, &voice);
    let told = p.told("breaker is open").await;
    assert!(told.contains("Nothing was run"), "{told}");
    assert_eq!(t.uploads().len(), 2, "the endpoint was not called again");
    assert_eq!(p.get_file_calls(), 2, "nor the note fetched");
    assert!(p.jobs().await.is_empty(), "nothing ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_is_saved_byte_identical_and_its_path_reaches_the_agent() {
    let p = phone("[files]\nmax_bytes = 1000\n").await;
    let wt = p.session().await;
    let inbox = wt.join(".televibe/inbox");
    let report = binary(700);
    let id = p.tg.add_file("documents", "pdf", report.clone());
    p.tg.send_document(USER, &id, "report.pdf", Some("read the attached report"));
    p.told("📥 Saved as <code>.televibe/inbox/report.pdf</code> in session <b>S1</b>")
        .await;
    let jobs = p.ended_jobs(1).await;
    assert_eq!(std::fs::read(inbox.join("report.pdf")).unwrap(), report);
    assert_eq!(
        jobs[0]["instruction"],
        "read the attached report\n\nAttached file: .televibe/inbox/report.pdf"
    );
    // The agent read the file from inside its job.
    let sum = sha256(&inbox.join("report.pdf"));
    assert_eq!(
        jobs[0]["result_text"],
        format!("read .televibe/inbox/report.pdf {sum}"),
        "{}",
        jobs[0]
    );

    // A name that climbs out lands inside the inbox; a taken name gets a number, never an overwrite.
    let evil = p.tg.add_file("documents", "txt", b"evil\n".to_vec());
    p.tg.send_document(USER, &evil, "../../evil", None);
    p.told("Saved as <code>.televibe/inbox/evil</code>").await;
    let again = p.tg.add_file("documents", "pdf", binary(50));
    p.tg.send_document(USER, &again, "report.pdf", Some("the attached again"));
    p.told("Saved as <code>.televibe/inbox/report-1.pdf</code>")
        .await;
    let jobs = p.ended_jobs(3).await;
    assert_eq!(
        jobs[1]["instruction"],
        "See the attached file .televibe/inbox/evil"
    );
    assert_eq!(std::fs::read(inbox.join("evil")).unwrap(), b"evil\n");
    for outside in [wt.join("evil"), wt.parent().unwrap().join("evil")] {
        assert!(!outside.exists(), "{}", outside.display());
    }
    assert_eq!(std::fs::read(inbox.join("report.pdf")).unwrap(), report);
    assert_eq!(
        entries(&inbox),
        ["evil", "report-1.pdf", "report.pdf"],
        "no staged file left"
    );
    assert!(jobs.iter().all(|j| j["status"] == "done"), "{jobs:?}");
    // What was sent is no change of the session's: git ignores the daemon's folder.
    assert_eq!(git(&wt, &["status", "--porcelain", "-uall"]), "");
    assert!(
        jobs.iter().all(|j| j["files_changed"] == json!([])),
        "{jobs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_past_files_max_bytes_is_refused_before_or_while_downloading() {
    let p = phone("[files]\nmax_bytes = 1000\n").await;
    let wt = p.session().await;
    // Declared too big: refused before getFile.
    let big = p.tg.add_file("documents", "bin", vec![1; 5000]);
    p.tg.send_document(USER, &big, "big.bin", Some("look at it"));
    let told = p.told("<code>big.bin</code> is 4.9 KiB (5000 bytes)").await;
    assert!(
        told.contains("more than the 1000 bytes that files.max_bytes allows")
            && told.contains("Nothing was saved"),
        "{told}"
    );
    assert_eq!(p.get_file_calls(), 0, "no getFile");
    assert!(p.tg.served().downloads.is_empty(), "no download");
    // No size in the message: getFile's refuses it before the download.
    let quiet = p.tg.add_file("documents", "bin", vec![3; 3000]);
    p.tg.leave_size_out_of_messages(&quiet);
    p.tg.send_document(USER, &quiet, "unsized.bin", Some("look again"));
    p.told("<code>unsized.bin</code> is 2.9 KiB (3000 bytes)")
        .await;
    assert_eq!(p.get_file_calls(), 1, "getFile told the size");
    assert!(p.tg.served().downloads.is_empty(), "no download");
    // Declared small, streamed large: cut off at the cap while downloading.
    let total = 32 << 20;
    let liar = p.tg.add_file("documents", "bin", vec![2; total]);
    p.tg.lie_about_size(&liar, 100);
    p.tg.send_document(USER, &liar, "liar.bin", Some("look at this one"));
    let told = p.told("<code>liar.bin</code> turned out larger").await;
    assert!(told.contains("Nothing was saved"), "{told}");
    until(WAIT, "the stream ended", || {
        p.tg.served().streams_ended == 1
    })
    .await;
    let served = p.tg.served();
    assert_eq!(served.downloads.len(), 1);
    assert!(
        served.streamed < total as u64,
        "the daemon stopped reading: {} of {total} bytes went out",
        served.streamed
    );
    assert!(!wt.join(".televibe").exists(), "nothing saved");
    // A closed session takes no file: refused before anything is fetched.
    say(&p.tg, "/close S1", "closed; branch").await;
    let late = p.tg.add_file("documents", "txt", b"late\n".to_vec());
    p.tg.send_document(USER, &late, "late.txt", None);
    p.told("session S1 is closed").await;
    assert_eq!(p.get_file_calls(), 2, "no getFile for the closed session");
    assert!(p.jobs().await.is_empty(), "nothing ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_photo_without_a_caption_runs_see_the_attached_file() {
    let p = phone("[files]\nmax_bytes = 1000\n").await;
    let wt = p.session().await;
    let small = binary(300);
    let (s, l) = (
        p.tg.add_file("photos", "jpg", small.clone()),
        p.tg.add_file("photos", "jpg", binary(2000)),
    );
    // The largest size that fits the cap is taken.
    p.tg.send_photo(USER, &[(&s, 320, 240), (&l, 1280, 960)], None);
    let told = p.told("📥 Saved as <code>.televibe/inbox/photo-").await;
    let path = told
        .split("<code>")
        .nth(1)
        .and_then(|r| r.split("</code>").next())
        .unwrap()
        .to_string();
    assert!(path.ends_with(".jpg"), "{path}");
    let jobs = p.ended_jobs(1).await;
    assert_eq!(
        jobs[0]["instruction"],
        format!("See the attached file {path}")
    );
    assert_eq!(std::fs::read(wt.join(&path)).unwrap(), small);
    assert_eq!(
        jobs[0]["result_text"],
        format!("read {path} {}", sha256(&wt.join(&path)))
    );
    assert_eq!(p.tg.served().downloads, ["photos/file_1.jpg"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbox_link_planted_by_a_job_writes_nothing_outside() {
    for user in daemon_users() {
        let p = phone_as(user, "").await;
        let wt = p.session().await;
        let outside = p.env.dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        p.env.hand_over();
        // A job plants the link where the daemon saves files.
        p.tg.send_text(USER, &format!("plant-inbox-link {}", outside.display()));
        let jobs = p.ended_jobs(1).await;
        assert_eq!(jobs[0]["result_text"], "planted", "{user:?}: {}", jobs[0]);
        let link = wt.join(".televibe/inbox");
        assert!(link.is_symlink(), "{user:?}");
        // The attack works without the defence: a write through the link lands outside.
        std::fs::write(link.join("probe"), "x").unwrap();
        assert_eq!(entries(&outside), ["probe"]);
        std::fs::remove_file(outside.join("probe")).unwrap();

        let id = p.tg.add_file("documents", "txt", b"payload\n".to_vec());
        p.tg.send_document(USER, &id, "payload.txt", Some("read the attached"));
        let told = p.told("not saved").await;
        assert!(told.contains("symbolic link"), "{user:?}: {told}");
        assert!(
            entries(&outside).is_empty(),
            "{user:?}: nothing written outside"
        );
        assert!(link.is_symlink(), "{user:?}: the link is left as it was");
        assert_eq!(p.jobs().await.len(), 1, "{user:?}: nothing ran");
    }
}

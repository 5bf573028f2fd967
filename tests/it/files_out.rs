//! Files out of the phone: `/get` sends a worktree's file as a document (inside the worktree only, no link,
//! no FIFO, within `files.max_bytes`), and a result longer than its message arrives whole as a document.

use std::path::PathBuf;
use std::time::Duration;

use crate::fake_telegram::{FakeTelegram, Fault};
use crate::harness::*;
use crate::telegram::{FAKE_AGENT, USER, say, start, telegram_config, texts};

/// A daemon with one open session, S1 of project `app`, active in the user's chat: the fake Bot API, the
/// environment, the daemon and the session's worktree.
async fn with_session(extra: &str) -> (FakeTelegram, Env, Daemon, PathBuf) {
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&telegram_config(
        &tg,
        &format!("[agent]\ncommand = \"{FAKE_AGENT}\"\n{extra}"),
    ));
    make_repo(&env.root().join("repos/app"));
    let d = start(&env);
    say(&tg, "/register app", "Registered").await;
    say(&tg, "/new app", "Session <b>S1</b>").await;
    let wt = env.root().join("workspaces/app/S1");
    assert!(wt.join("README.md").is_file(), "the worktree is at {wt:?}");
    (tg, env, d, wt)
}

/// Asks for `args` and waits for the refusal naming `code`; nothing was sent as a document.
async fn refused(tg: &FakeTelegram, args: &str, code: &str) -> String {
    say(tg, &format!("/get {args}"), code).await;
    assert!(
        tg.documents(USER).is_empty(),
        "nothing is sent for {args}: {:?}",
        tg.documents(USER)
    );
    texts(tg).last().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn get_sends_a_file_of_the_worktree_byte_for_byte() {
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    env.write_config(&telegram_config(&tg, ""));
    let d = start(&env);
    say(&tg, "/get README.md", "no active session").await;
    drop(d);
    let (tg, _env, d, wt) = with_session("").await;
    tg.send_text(USER, "/get README.md");
    until(Duration::from_secs(20), "README.md as a document", || {
        !tg.document_bytes(USER).is_empty()
    })
    .await;
    let (name, bytes) = tg.document_bytes(USER).remove(0);
    assert_eq!(name, "README.md");
    assert_eq!(bytes.unwrap(), std::fs::read(wt.join("README.md")).unwrap());
    let (_, _, caption) = tg.documents(USER).remove(0);
    assert!(
        caption.contains("README.md") && caption.contains("Session S1"),
        "{caption}"
    );
    // Any bytes, not only text; a session named explicitly; a `..` that stays inside.
    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    std::fs::create_dir_all(wt.join("out")).unwrap();
    std::fs::write(wt.join("out/data.bin"), &binary).unwrap();
    tg.send_text(USER, "/get S1 src/../out/data.bin");
    until(Duration::from_secs(20), "data.bin as a document", || {
        tg.document_bytes(USER).len() == 2
    })
    .await;
    let (name, bytes) = tg.document_bytes(USER).remove(1);
    assert_eq!(name, "data.bin");
    assert_eq!(bytes.unwrap(), binary, "byte for byte");
    say(&tg, "/get missing.txt", "FILE_NOT_FOUND").await;
    assert!(
        texts(&tg).last().unwrap().contains("missing.txt not found"),
        "{:?}",
        texts(&tg).last()
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_refuses_a_path_that_leaves_the_worktree() {
    let (tg, _env, d, _wt) = with_session("").await;
    let text = refused(&tg, "../../../etc/passwd", "INVALID_PATH").await;
    assert!(text.contains("leaves the worktree"), "{text}");
    let text = refused(&tg, "/etc/passwd", "INVALID_PATH").await;
    assert!(text.contains("absolute"), "{text}");
    let text = refused(&tg, "S1 ../S2/README.md", "INVALID_PATH").await;
    assert!(text.contains("leaves the worktree"), "{text}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_refuses_a_link_anywhere_on_the_way() {
    let (tg, env, d, wt) = with_session("").await;
    // What a job could plant: a link to a host file, a link to a directory outside, a link to another
    // project's file. Each target is readable, so only the refusal keeps it in.
    let other = env.root().join("repos/app/secret.txt");
    std::fs::write(&other, "another worktree's secret\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", wt.join("passwd")).unwrap();
    std::os::unix::fs::symlink("/etc", wt.join("etc")).unwrap();
    std::os::unix::fs::symlink(&other, wt.join("secret.txt")).unwrap();
    assert!(
        std::fs::read(wt.join("etc/passwd")).is_ok(),
        "the attack reads through the link"
    );
    for (path, what) in [
        ("passwd", "symbolic link"),
        ("etc/passwd", "symbolic link"),
        ("secret.txt", "symbolic link"),
    ] {
        let text = refused(&tg, path, "INVALID_PATH").await;
        assert!(text.contains(what), "{path}: {text}");
    }
    refused(&tg, "src", "FILE_NOT_FOUND").await;
    std::fs::create_dir(wt.join("src")).unwrap();
    let text = refused(&tg, "src", "INVALID_PATH").await;
    assert!(text.contains("directory"), "{text}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_refuses_a_fifo_without_waiting_on_it() {
    let (tg, _env, d, wt) = with_session("").await;
    let fifo = std::ffi::CString::new(wt.join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
    // Nobody ever writes to it: a blocking open would hang the command, and the next one behind it.
    let text = refused(&tg, "pipe", "INVALID_PATH").await;
    assert!(text.contains("FIFO"), "{text}");
    say(&tg, "/status", "Active session").await;
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_refuses_a_hard_link_and_an_empty_file() {
    let (tg, _env, d, wt) = with_session("").await;
    // A second name for a file outside the worktree (as a job could make of a file it cannot read).
    let outside = wt.parent().unwrap().join("secret");
    std::fs::write(&outside, "not for the phone").unwrap();
    std::fs::hard_link(&outside, wt.join("notes.txt")).unwrap();
    let text = refused(&tg, "notes.txt", "INVALID_PATH").await;
    assert!(text.contains("hard link"), "{text}");
    std::fs::write(wt.join("empty.txt"), "").unwrap();
    let text = refused(&tg, "empty.txt", "INVALID_PATH").await;
    assert!(text.contains("empty"), "{text}");
    assert!(tg.document_bytes(USER).is_empty(), "nothing was sent");
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_refuses_a_file_larger_than_the_cap() {
    let (tg, _env, d, wt) = with_session("[files]\nmax_bytes = 1000\n").await;
    std::fs::write(wt.join("big.log"), vec![b'x'; 2048]).unwrap();
    std::fs::write(wt.join("small.log"), vec![b'y'; 1000]).unwrap();
    let text = refused(&tg, "big.log", "FILE_TOO_LARGE").await;
    assert!(
        text.contains("2 KB (2048 bytes)") && text.contains("1000 bytes"),
        "the size and the limit are named: {text}"
    );
    tg.send_text(USER, "/get small.log");
    until(
        Duration::from_secs(20),
        "the file at the cap is sent",
        || !tg.document_bytes(USER).is_empty(),
    )
    .await;
    assert_eq!(
        tg.document_bytes(USER)[0].1.as_deref(),
        Some(&[b'y'; 1000][..])
    );
    drop(d);
}

/// The long result the scripted agent gives for `long-result`.
fn long_result() -> String {
    let mut r: String = (1..=300)
        .map(|i| format!("line {i} of a long result\n"))
        .collect();
    r.push_str("the end");
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_result_arrives_whole_as_a_document_once_even_across_a_restart_in_any_verbosity() {
    let (tg, env, d, _wt) = with_session("").await;
    // The chat sees only results: the document is part of the result, so it comes all the same.
    say(&tg, "/verbosity final", "now <b>final</b>").await;
    // The result's message is answered with a 500 once (retried: its document is not sent again), then
    // never answered at all (the daemon dies waiting); the restarted daemon sends it again.
    const MARK: &str = "The whole result is in the file above";
    tg.fail_next_matching("sendMessage", MARK, 1, Fault::Status(500));
    tg.fail_next_matching("sendMessage", MARK, 1, Fault::BlackHole);
    tg.send_text(USER, "give a long-result please");
    let asked = |tg: &FakeTelegram| {
        tg.arrived("sendMessage")
            .iter()
            .filter(|p| p["text"].as_str().is_some_and(|t| t.contains(MARK)))
            .count()
    };
    until(
        Duration::from_secs(30),
        "the result's message was tried twice",
        || asked(&tg) == 2,
    )
    .await;
    assert_eq!(tg.document_bytes(USER).len(), 1, "one document so far");
    let mut d = d;
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(5));
    let d = start(&env);
    let result_message = |tg: &FakeTelegram| {
        tg.messages(USER)
            .into_iter()
            .find(|m| m.text.contains("<b>Job ") && m.text.contains(MARK))
    };
    until(
        Duration::from_secs(30),
        "the result's message after the restart",
        || result_message(&tg).is_some(),
    )
    .await;
    let m = result_message(&tg).unwrap();
    assert!(
        m.text
            .contains("line 1 of a long result\nline 2 of a long result"),
        "the first lines inline: {}",
        m.text
    );
    assert!(!m.text.contains("line 300"), "{}", m.text);
    // A marker closes the window: a second document would have gone before this answer.
    say(&tg, "/status", "Active session").await;
    let docs = tg.document_bytes(USER);
    let names: Vec<&String> = docs.iter().map(|d| &d.0).collect();
    assert_eq!(docs.len(), 1, "the document went once: {names:?}");
    let (name, bytes) = &docs[0];
    assert!(name.ends_with("-result.md"), "{name}");
    assert_eq!(
        String::from_utf8(bytes.clone().unwrap()).unwrap(),
        long_result(),
        "the whole result, not the event's cut copy"
    );
    let (_, _, caption) = tg.documents(USER).remove(0);
    assert!(
        caption.contains("Whole result of job") && caption.contains("301 lines"),
        "{caption}"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_diff_shows_its_first_lines_with_its_document() {
    let (tg, _env, d, wt) = with_session("").await;
    let text: String = (1..=400).map(|i| format!("changed line {i}\n")).collect();
    std::fs::write(wt.join("README.md"), &text).unwrap();
    tg.send_text(USER, "/diff");
    until(Duration::from_secs(20), "the diff as a document", || {
        !tg.documents(USER).is_empty()
    })
    .await;
    let (name, _, caption) = tg.documents(USER).remove(0);
    assert_eq!(name, "S1.diff");
    assert!(
        caption.contains("Changes of S1") && caption.contains("<pre>diff --git"),
        "the first lines inline: {caption}"
    );
    assert!(
        caption.contains("The whole text is in the file"),
        "{caption}"
    );
    let (_, bytes) = tg.document_bytes(USER).remove(0);
    let bytes = String::from_utf8(bytes.unwrap()).unwrap();
    assert!(
        bytes.contains("+changed line 400"),
        "whole: {}",
        bytes.len()
    );
    drop(d);
}

//! `register_project {url}`: a project cloned from a git URL (a local bare repository served as `file://`)
//! into `<root>/repos`, sessions on it, a node without the clone cloning it again, and refusals that leave
//! nothing behind (no target, no staging directory).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

/// The folder the test's upstream repositories live in, made an allowed root of `env` (a repository on
/// the daemon's own disk is cloned only from an allowed root); `extra` is the rest of the test's config.
fn upstream(env: &Env, extra: &str) -> PathBuf {
    let dir = env.dir.path().join("upstream");
    std::fs::create_dir_all(&dir).unwrap();
    env.write_config(&format!(
        "{extra}\n[projects]\nallowed_roots = [\"{}\"]\n",
        dir.display()
    ));
    dir
}

/// A bare repository `<dir>/lib.git` whose `main` has one commit (README.md).
fn bare_repo(dir: &Path) -> PathBuf {
    let work = dir.join("lib-work");
    make_repo(&work);
    git(dir, &["init", "-q", "--bare", "lib.git"]);
    let bare = dir.join("lib.git");
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    git(&bare, &["symbolic-ref", "HEAD", "refs/heads/main"]);
    bare
}

/// The names in `<root>/repos`, sorted (staging directories `.clone-*` included).
fn repos_names(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.root().join("repos"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn project_count(mcp: &Mcp) -> usize {
    mcp.call("list_projects", json!({})).await.unwrap()["projects"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_cloned_from_a_url_hosts_sessions_and_registers_once() {
    let env = Env::new("");
    let bare = bare_repo(&upstream(&env, ""));
    let url = format!("file://{}", bare.display());
    let d = env.start();
    let mcp = Mcp::connect(&env).await;

    let reg = mcp
        .call("register_project", json!({"url": url}))
        .await
        .unwrap();
    assert_eq!(reg["already_registered"], false);
    assert_eq!(reg["id"], "lib", "named by the URL's last component");
    assert_eq!(reg["default_branch"], "main");
    assert_eq!(reg["remote_url"], url.as_str());
    let clone = env.root().join("repos/lib").canonicalize().unwrap();
    assert_eq!(reg["repo_path"], clone.display().to_string());
    assert!(clone.join("README.md").is_file());
    assert_eq!(
        git(&clone, &["remote", "get-url", "origin"]).trim(),
        url,
        "the clone's origin is the URL"
    );
    assert_eq!(repos_names(&env), ["lib"]);
    let got = mcp
        .call("get_project", json!({"project_id": "lib"}))
        .await
        .unwrap();
    assert_eq!(got["remote_url"], url.as_str());
    let registered: Vec<_> = audit_events(&env)
        .into_iter()
        .filter(|e| e["event"] == "project.registered")
        .collect();
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0]["details"]["url"], url.as_str());

    // A session on it works in the clone.
    let s1 = mcp
        .call(
            "create_session",
            json!({"project_id": "lib", "branch": "feature/x"}),
        )
        .await
        .unwrap();
    let wt = PathBuf::from(s1["worktree_path"].as_str().unwrap());
    assert!(wt.join("README.md").is_file());
    assert!(
        git(&clone, &["worktree", "list"]).contains(wt.to_str().unwrap()),
        "the worktree belongs to the clone"
    );

    // The same URL again: the same project, nothing cloned.
    let again = mcp
        .call("register_project", json!({"url": url}))
        .await
        .unwrap();
    assert_eq!(again["already_registered"], true);
    assert_eq!(again["id"], "lib");
    assert_eq!(project_count(&mcp).await, 1);
    assert_eq!(repos_names(&env), ["lib"]);

    // Both path and url, or neither: refused, nothing changes.
    let before = tree_listing(&env.root().join("repos"));
    let e = mcp
        .refused(
            "register_project",
            json!({"path": "lib", "url": url}),
            "INVALID_PATH",
        )
        .await;
    assert!(e.message.contains("not both"), "{}", e.message);
    mcp.refused("register_project", json!({"name": "x"}), "INVALID_PATH")
        .await;

    // Bad URLs: refused before git runs, or by git; nothing left in repos/.
    for bad in ["ext::sh -c touch% /tmp/televibe-pwned", "-uoption", ""] {
        mcp.refused("register_project", json!({"url": bad}), "INVALID_PATH")
            .await;
    }
    assert!(!Path::new("/tmp/televibe-pwned").exists());
    // A directory of an allowed root that is no repository: git refuses it.
    let empty = env.dir.path().join("upstream/empty.git");
    std::fs::create_dir_all(&empty).unwrap();
    let e = mcp
        .refused(
            "register_project",
            json!({"url": format!("file://{}", empty.display())}),
            "GIT_ERROR",
        )
        .await;
    assert!(e.message.contains("git clone file://"), "{}", e.message);
    // A repository on this machine outside the allowed roots, or one that is not there, is refused before
    // git runs.
    let elsewhere = env.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let outside = bare_repo(&elsewhere);
    for url in [
        format!("file://{}", outside.display()),
        outside.display().to_string(),
        format!(
            "file://{}",
            env.dir.path().join("upstream/nope.git").display()
        ),
    ] {
        mcp.refused("register_project", json!({"url": url}), "INVALID_PATH")
            .await;
    }
    // Credentials of a URL are never told back.
    let e = mcp
        .refused(
            "register_project",
            json!({"url": "https://bob:s3cret@127.0.0.1:9/lib2.git"}),
            "GIT_ERROR",
        )
        .await;
    assert!(!e.message.contains("s3cret"), "{}", e.message);
    assert!(e.message.contains("***@127.0.0.1"), "{}", e.message);
    // A directory of that name that is not this URL's registered clone.
    make_repo(&env.root().join("repos/other"));
    let e = mcp
        .refused(
            "register_project",
            json!({"url": url, "name": "other"}),
            "PROJECT_EXISTS",
        )
        .await;
    assert!(e.message.contains("exists already"), "{}", e.message);
    std::fs::remove_dir_all(env.root().join("repos/other")).unwrap();
    // A name that cannot name a directory.
    mcp.refused(
        "register_project",
        json!({"url": url, "name": "../up"}),
        "INVALID_PATH",
    )
    .await;
    assert_eq!(tree_listing(&env.root().join("repos")), before);
    assert_eq!(project_count(&mcp).await, 1);
    assert_eq!(
        d.metric("televibe_circuit_breaker_failures_total{name=\"git_operations\"}"),
        Some(0.0),
        "a remote's refusal is not a git failure"
    );

    // Another name clones the same URL once more, beside the first.
    let second = mcp
        .call(
            "register_project",
            json!({"url": url, "name": "Lib Two", "trusted": true}),
        )
        .await
        .unwrap();
    assert_eq!(second["id"], "lib-two");
    assert_eq!(second["trusted"], true);
    assert_eq!(repos_names(&env), ["lib", "lib-two"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_without_the_clone_clones_it_for_a_session() {
    let env = Env::new("");
    let bare = bare_repo(&upstream(&env, ""));
    let url = format!("file://{}", bare.display());
    let _d = env.start();
    let mcp = Mcp::connect(&env).await;
    mcp.call("register_project", json!({"url": url}))
        .await
        .unwrap();
    // As on a node that has the project's row but not its clone.
    std::fs::remove_dir_all(env.root().join("repos/lib")).unwrap();
    let s = mcp
        .call("create_session", json!({"project_id": "lib"}))
        .await
        .unwrap();
    let wt = PathBuf::from(s["worktree_path"].as_str().unwrap());
    assert!(wt.join("README.md").is_file());
    assert!(env.root().join("repos/lib/README.md").is_file());
    assert_eq!(repos_names(&env), ["lib"]);
    let cloned: Vec<_> = audit_events(&env)
        .into_iter()
        .filter(|e| e["event"] == "project.cloned")
        .collect();
    assert_eq!(cloned.len(), 1, "{cloned:?}");
    assert_eq!(cloned[0]["details"]["url"], url.as_str());
    // The same URL registered again on such a node clones it too.
    std::fs::remove_dir_all(env.root().join("repos/lib")).unwrap();
    let again = mcp
        .call("register_project", json!({"url": url}))
        .await
        .unwrap();
    assert_eq!(again["already_registered"], true);
    assert!(env.root().join("repos/lib/README.md").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clone_cut_by_the_timeout_leaves_nothing() {
    let env = Env::new("[git]\nremote_timeout_secs = 2\n");
    // An ssh that never answers (and keeps the clone's staging directory in place while it waits).
    let ssh = env.dir.path().join("slow-ssh");
    std::fs::write(&ssh, "#!/bin/sh\nsleep 60\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = env.start_with(|c| {
        c.env("GIT_SSH_COMMAND", &ssh);
    });
    let mcp = Mcp::connect(&env).await;
    let started = Instant::now();
    let e = mcp
        .refused(
            "register_project",
            json!({"url": "ssh://git@example.invalid/slow.git"}),
            "GIT_ERROR",
        )
        .await;
    assert!(
        e.message.contains("did not answer git clone within 2 s"),
        "{}",
        e.message
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(repos_names(&env).is_empty(), "{:?}", repos_names(&env));
    assert_eq!(project_count(&mcp).await, 0);
    assert_eq!(
        d.metric("televibe_circuit_breaker_failures_total{name=\"git_operations\"}"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_phone_registers_a_url_and_opens_a_session_on_it() {
    use crate::fake_telegram::FakeTelegram;
    use crate::telegram::{say, start, telegram_config, texts};
    let tg = FakeTelegram::start().await;
    let env = Env::new("");
    let bare = bare_repo(&upstream(&env, &telegram_config(&tg, "")));
    let _d = start(&env);
    let url = format!("file://{}", bare.display());
    say(&tg, &format!("/register {url}"), "Registered").await;
    assert!(
        texts(&tg).iter().any(|t| t.contains("Cloning")),
        "{:?}",
        texts(&tg)
    );
    assert!(env.root().join("repos/lib/README.md").is_file());
    say(&tg, &format!("/register {url}"), "Already registered").await;
    say(&tg, "/new lib", "Session <b>S1</b>").await;
    assert!(env.root().join("workspaces/lib/S1/README.md").is_file());
    say(&tg, "/register ext::sh -c true", "INVALID_PATH").await;
    say(
        &tg,
        "/register https://bob:s3cret@127.0.0.1:9/x.git",
        "GIT_ERROR",
    )
    .await;
    assert!(
        texts(&tg).iter().all(|t| !t.contains("s3cret")),
        "{:?}",
        texts(&tg)
    );
    assert_eq!(repos_names(&env), ["lib"]);
}

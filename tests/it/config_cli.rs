//! Configuration errors fail fast and name the key; `config check` prints the effective config masked.

use crate::harness::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn unknown_key_fails_serve_and_check_naming_it() {
    let env = Env::new("[jobs]\nmax_concurent = 3");
    for args in [&["serve"][..], &["config", "check"][..]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("max_concurent") && err.contains("jobs"),
            "{err}"
        );
    }
    assert!(!env.root().exists(), "a bad config changes nothing on disk");
}

#[test]
fn bad_port_fails_naming_http_listen() {
    let env = Env::new("");
    std::fs::write(
        env.config(),
        format!(
            "root = \"{}\"\n[http]\nlisten = \"127.0.0.1:70000\"\n",
            env.root().display()
        ),
    )
    .unwrap();
    let out = env.run(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("http.listen"), "{}", stderr(&out));
}

#[test]
fn wrong_type_from_environment_names_the_key() {
    let env = Env::new("");
    let out = env
        .command(&["config", "check"])
        .env("TELEVIBE_JOBS__MAX_CONCURRENT", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("jobs.max_concurrent"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_prints_effective_config_with_secrets_masked() {
    let env = Env::new("[jobs]\nmax_concurrent = 2");
    let out = env
        .command(&["config", "check"])
        .env("TELEVIBE_TELEGRAM__TOKEN", "42:very-secret")
        .env("TELEVIBE_TELEGRAM__ALLOWED_USERS", "[111, 222]")
        .env("TELEVIBE_BREAKERS__CLAUDE_CODE__TIMEOUT_SECONDS", "120")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("very-secret"), "{text}");
    assert!(text.contains("token = \"********\""), "{text}");
    assert!(text.contains("max_concurrent = 2"), "{text}");
    assert!(
        text.contains("allowed_users = [\n    111,\n    222,\n]")
            || text.contains("allowed_users = [111, 222]"),
        "{text}"
    );
    assert!(text.contains("timeout_seconds = 120"), "{text}");
    assert!(
        text.contains("api_url = \"https://api.telegram.org\""),
        "{text}"
    );
}

#[test]
fn missing_explicit_config_file_is_an_error() {
    let env = Env::new("");
    let out = std::process::Command::new(BIN)
        .args(["--config", "/nonexistent/televibe.toml", "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/televibe.toml"));
    drop(env);
}

#[test]
fn bad_sandbox_and_policy_settings_are_refused_naming_the_key() {
    for (extra, key) in [
        ("[agent]\nsandbox = \"maybe\"", "agent.sandbox"),
        (
            "[agent]\nsandbox_hide = [\"relative/dir\"]",
            "agent.sandbox_hide",
        ),
        (
            "[approvals]\nauto_allow = [\"ls; rm -rf x\"]",
            "approvals.auto_allow",
        ),
        ("[approvals]\nauto_deny = [\"\"]", "approvals.auto_deny"),
    ] {
        let env = Env::new(extra);
        let out = env.run(&["config", "check"]);
        assert_eq!(out.status.code(), Some(1), "{extra}");
        assert!(stderr(&out).contains(key), "{extra}: {}", stderr(&out));
    }
}

/// Runs `televibe <args>` with a stdout pipe whose reader is already gone, as in `televibe … | head`
/// after `head` exited: the command ends quietly (exit 0, or SIGPIPE as other tools do), without a panic.
fn run_into_closed_pipe(env: &Env, args: &[&str]) {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = env
        .command(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{args:?}: {err}"
    );
    assert!(
        out.status.code() == Some(0) || out.status.signal() == Some(libc::SIGPIPE),
        "{args:?}: {:?} {err}",
        out.status
    );
}

#[test]
fn printing_into_a_closed_pipe_is_quiet() {
    let env = Env::new("");
    run_into_closed_pipe(&env, &["config", "check"]);
    let d = env.start();
    run_into_closed_pipe(&env, &["admin", "tree"]);
    run_into_closed_pipe(&env, &["admin", "jobs", "--json"]);
    drop(d);
}

/// `televibe config check` without `--config`, from `dir`, with only the given `TELEVIBE_*` variables.
fn check_from(dir: &std::path::Path, vars: &[(&str, &std::path::Path)]) -> std::process::Output {
    let mut c = std::process::Command::new(BIN);
    c.args(["config", "check"]).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("TELEVIBE_") {
            c.env_remove(k);
        }
    }
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn the_config_file_comes_from_televibe_config_or_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().join("here");
    std::fs::create_dir_all(&here).unwrap();
    std::fs::write(
        here.join("config.toml"),
        "root = \"/srv/from-working-dir\"\n",
    )
    .unwrap();
    let named = dir.path().join("named.toml");
    std::fs::write(&named, "root = \"/srv/from-televibe-config\"\n").unwrap();

    // ./config.toml by default.
    let out = check_from(&here, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/srv/from-working-dir"), "{text}");
    assert!(stderr(&out).contains("config.toml"), "{}", stderr(&out));

    // TELEVIBE_CONFIG wins over ./config.toml.
    let out = check_from(&here, &[("TELEVIBE_CONFIG", &named)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/srv/from-televibe-config") && !text.contains("from-working-dir"),
        "{text}"
    );
    assert!(stderr(&out).contains("named.toml"), "{}", stderr(&out));

    // A named file that is missing is an error, never a silent fallback.
    let out = check_from(&here, &[("TELEVIBE_CONFIG", &dir.path().join("nope.toml"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nope.toml"), "{}", stderr(&out));

    // Without either, the built-in defaults.
    let out = check_from(dir.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("defaults"), "{}", stderr(&out));
}

#[test]
fn a_retention_of_zero_days_is_refused_naming_the_key() {
    for key in [
        "retention_days",
        "job_log_retention_days",
        "audit_retention_days",
    ] {
        let env = Env::new(&format!("[logging]\n{key} = 0\n"));
        let out = env.run(&["config", "check"]);
        assert_eq!(out.status.code(), Some(1), "{key}");
        assert!(
            stderr(&out).contains(&format!("logging.{key}")),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn third_party_level_is_documented_checked_and_taken_from_the_environment() {
    let env = Env::new("");
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("third_party_level = \"warning\""), "{text}");
    let with = |value: &str| {
        env.command(&["config", "check"])
            .env("TELEVIBE_LOGGING__THIRD_PARTY_LEVEL", value)
            .output()
            .unwrap()
    };
    let out = with("error");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("third_party_level = \"error\""),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = with("loud");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("logging.third_party_level") && stderr(&out).contains("loud"),
        "{}",
        stderr(&out)
    );
}

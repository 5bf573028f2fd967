//! Codex's SAY_HI: a message `SAY_HI` in a Codex session → the final tracker at the fake Bot API, beside the
//! bare `codex app-server` driven the same way (initialize, a thread, a turn, its end, stdin closed).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::daemon::{Setup, make_repo};
use crate::fake_openai::{FakeOpenAi, Reply};
use crate::fake_telegram::{FakeTelegram, TOKEN};
use crate::report::{Figure, Samples, ms};
use crate::tg_cases::{say, telegram};

fn codex_cli() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        ".codex-cli/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
    );
    p.exists().then_some(p)
}

/// One bare app-server run in `dir` with `codex_home`, the provider at `base_url`: its wall time.
fn bare_run(codex: &Path, dir: &Path, home: &Path, codex_home: &Path, base_url: &str) -> Duration {
    let t = Instant::now();
    let provider = [
        "model_provider=\"fake\"".to_string(),
        "model_providers.fake.name=\"fake\"".to_string(),
        format!("model_providers.fake.base_url=\"{base_url}\""),
        "model_providers.fake.wire_api=\"responses\"".to_string(),
        "model_providers.fake.env_key=\"OPENAI_API_KEY\"".to_string(),
        "model=\"gpt-5.5\"".to_string(),
    ];
    let mut c = std::process::Command::new(codex);
    c.arg("app-server");
    for p in &provider {
        c.args(["-c", p]);
    }
    let mut child = c
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("CODEX_HOME", codex_home)
        .env("OPENAI_API_KEY", "sk-test")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut send = |v: serde_json::Value| {
        stdin.write_all(format!("{v}\n").as_bytes()).unwrap();
    };
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"clientInfo": {"name": "bench", "version": "1"}}}),
    );
    send(json!({"jsonrpc": "2.0", "method": "initialized"}));
    send(
        json!({"jsonrpc": "2.0", "id": 2, "method": "thread/start", "params": {"cwd": dir, "approvalPolicy": "untrusted", "sandbox": "danger-full-access"}}),
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap_or_default();
        if v["id"] == 2 {
            let thread = v["result"]["thread"]["id"].clone();
            send(
                json!({"jsonrpc": "2.0", "id": 3, "method": "turn/start", "params": {"threadId": thread, "input": [{"type": "text", "text": "SAY_HI"}]}}),
            );
        }
        if v["method"] == "turn/completed" {
            break;
        }
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    t.elapsed()
}

pub async fn say_hi(bin: &Path) -> Vec<Figure> {
    const NAME: &str =
        "Codex SAY_HI end to end with the real CLI, overhead over the bare app-server";
    let Some(codex) = codex_cli() else {
        return vec![Figure::missing(
            NAME,
            "the Codex CLI is not installed (scripts/install-deps installs it into .codex-cli/)",
        )];
    };
    let api = FakeOpenAi::start(|_| Reply::text("hi")).await;
    let tg = FakeTelegram::start().await;
    let user = 5001;
    let s = Setup::new(bin, "");
    let home = s.dir.path().join("home");
    let codex_home = s.dir.path().join("codex-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&codex_home).unwrap();
    std::fs::write(
        s.config(),
        format!(
            "root = \"{}\"\n[logging]\nlevel = \"debug\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [agent]\ndefault = \"codex\"\n[agents.codex]\ncommand = \"{}\"\n\
             extra_args = [\"-c\", \"model=\\\"gpt-5.5\\\"\"]\n\
             env = {{ OPENAI_BASE_URL = \"{}\", OPENAI_API_KEY = \"sk-test\", HOME = \"{}\" }}\n{}",
            s.root().display(),
            codex.display(),
            api.base_url(),
            home.display(),
            telegram(&tg, &[user]),
        ),
    )
    .unwrap();
    make_repo(&s.root().join("repos/app"), 0);
    let d = s.start(Some(TOKEN));
    say(&tg, user, "/register app", &|t| t.contains("Registered")).await;
    say(&tg, user, "/new app", &|t| t.contains("S1")).await;
    let scratch = s.dir.path().join("scratch");
    make_repo(&scratch, 0);
    let (mut bare, mut e2e) = (Vec::new(), Vec::new());
    for _ in 0..6 {
        bare.push(bare_run(
            &codex,
            &scratch,
            &home,
            &codex_home,
            &api.base_url(),
        ));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        e2e.push(
            say(&tg, user, "SAY_HI", &|t| {
                t.contains("✅") && t.contains("hi")
            })
            .await,
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    drop(d);
    // The first of each warms caches; it is not counted.
    let (bare, e2e) = (Samples::of(&bare[1..]), Samples::of(&e2e[1..]));
    let overhead = e2e.p50() - bare.p50();
    vec![
        Figure::new(
            NAME,
            format!("{} (end to end {})", ms(overhead), e2e.show()),
            format!("bare app-server {}", bare.show()),
        )
        .data(json!({"overhead_ms": overhead, "e2e": e2e.json(), "bare": bare.json()})),
    ]
}

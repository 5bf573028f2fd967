//! Cases that go through Telegram (the fake Bot API, which enforces Telegram's flood limits): command
//! replies, the real agent CLI end to end, agent output to Telegram, and the load case.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::agent::now_ns;
use crate::daemon::{Daemon, Setup, make_repo};
use crate::fake_model::{FakeModel, Reply};
use crate::fake_telegram::{FakeTelegram, TOKEN};
use crate::report::{Figure, Samples, mb, ms};

/// Polls `f` every millisecond until it answers, at most `limit`.
pub async fn until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The first message sent to or edited in `chat` after `since` (whose text passes `want`): its arrival.
fn first_out(
    tg: &FakeTelegram,
    chat: i64,
    since: Instant,
    want: &dyn Fn(&str) -> bool,
) -> Option<Instant> {
    tg.calls()
        .into_iter()
        .filter(|c| {
            c.at >= since
                && c.error.is_none()
                && (c.method == "sendmessage" || c.method == "editmessagetext")
                && c.params.get("chat_id").and_then(|v| v.as_i64()) == Some(chat)
                && want(c.params.get("text").and_then(|t| t.as_str()).unwrap_or(""))
        })
        .map(|c| c.at)
        .next()
}

pub fn telegram(tg: &FakeTelegram, users: &[i64]) -> String {
    format!(
        "[telegram]\napi_url = \"{}\"\nallowed_users = {users:?}\n",
        tg.url()
    )
}

pub fn bench_agent() -> String {
    format!(
        "[agent]\ncommand = \"{}\"\nenv = {{ TVBENCH_AGENT = \"1\" }}\n",
        std::env::current_exe().unwrap().display()
    )
}

/// Says `text` as `user` and waits for the first reply that passes `want`.
pub async fn say(
    tg: &FakeTelegram,
    user: i64,
    text: &str,
    want: &dyn Fn(&str) -> bool,
) -> Duration {
    let t0 = Instant::now();
    tg.send_text(user, text);
    let at = until(Duration::from_secs(60), || first_out(tg, user, t0, want))
        .await
        .unwrap_or_else(|| panic!("no answer to {text:?}"));
    at.duration_since(t0)
}

/// `/start` → `sendMessage`, in four chats in turn and in one chat 0.7 s apart; start → first getUpdates.
pub async fn command_reply(bin: &Path) -> Vec<Figure> {
    let tg = FakeTelegram::start().await;
    let users = [5001, 5002, 5003, 5004];
    let s = Setup::new(bin, &telegram(&tg, &users));
    let spawned = Instant::now();
    let mut d = s.spawn(Some(TOKEN));
    let first_poll = until(Duration::from_secs(30), || {
        (!tg.arrived("getupdates").is_empty()).then(|| spawned.elapsed())
    })
    .await
    .expect("the daemon polls");
    d.wait_ready(Duration::from_secs(30)).unwrap();
    for u in users {
        say(&tg, u, "/start", &|_| true).await;
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut turns = Vec::new();
    for i in 0..40 {
        let tick = Instant::now();
        turns.push(say(&tg, users[i % 4], "/start", &|_| true).await);
        tokio::time::sleep(Duration::from_millis(300).saturating_sub(tick.elapsed())).await;
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // As a person might, and as peers were measured: 20 commands 0.7 s apart, whatever the replies do.
    let mut one_chat = Vec::new();
    let start = Instant::now();
    for i in 0..20u32 {
        tokio::time::sleep_until((start + Duration::from_millis(700) * i).into()).await;
        one_chat.push(say(&tg, users[0], "/start", &|_| true).await);
    }
    // Reference: a round trip to the same fake over loopback (one kept-alive HTTP connection).
    let client = reqwest::Client::new();
    let url = format!("{}/bot{TOKEN}/getMe", tg.url());
    let mut loopback = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        client
            .post(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        loopback.push(t.elapsed());
    }
    let (turns, one_chat, loopback) = (
        Samples::of(&turns),
        Samples::of(&one_chat),
        Samples::of(&loopback),
    );
    let limited = tg.flood_limited().len();
    drop(d);
    vec![
        Figure::new(
            "`/start` → `sendMessage` (4 chats in turn, 0.3 s apart)",
            turns.show(),
            format!("loopback round trip {}", loopback.show()),
        )
        .target("p50 ≤ 10 ms", turns.p50() <= 10.0)
        .data(json!({"reply": turns.json(), "loopback": loopback.json()})),
        Figure::new(
            "`/start` → `sendMessage` (one chat, 20 samples 0.7 s apart)",
            one_chat.show(),
            format!("loopback round trip {}", loopback.show()),
        )
        .target("p50 ≤ 10 ms", one_chat.p50() <= 10.0)
        .data(json!({"reply": one_chat.json(), "flood_limited": limited})),
        Figure::new(
            "start → first `getUpdates`",
            ms(first_poll.as_secs_f64() * 1000.0),
            "-".into(),
        )
        .target("≤ 100 ms", first_poll <= Duration::from_millis(100))
        .data(json!({"ms": first_poll.as_secs_f64() * 1000.0})),
    ]
}

fn claude_cli() -> Option<std::path::PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".claude-cli/node_modules/@anthropic-ai/claude-code-linux-x64/claude");
    p.exists().then_some(p)
}

/// A message `SAY_HI` → the final tracker (done, with the answer) at the fake, minus the bare CLI's time.
pub async fn say_hi(bin: &Path) -> Vec<Figure> {
    const NAME: &str = "SAY_HI end to end with the real agent CLI, overhead over the bare CLI";
    let Some(claude) = claude_cli() else {
        return vec![Figure::missing(
            NAME,
            "the agent CLI is not installed (scripts/install-deps installs it into .claude-cli/)",
        )];
    };
    let model = FakeModel::start(|_| Reply::Text("hi".into())).await;
    let tg = FakeTelegram::start().await;
    let user = 5001;
    let s = Setup::new(bin, "");
    let home = s.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let env = [
        ("ANTHROPIC_BASE_URL", model.url()),
        ("ANTHROPIC_API_KEY", "sk-test".to_string()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
        ("HOME", home.display().to_string()),
    ];
    let env_toml = env
        .iter()
        .map(|(k, v)| format!("{k} = \"{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        s.config(),
        format!(
            "root = \"{}\"\n[logging]\nlevel = \"debug\"\n[http]\nlisten = \"127.0.0.1:0\"\n[agent]\ncommand = \"{}\"\nenv = {{ {env_toml} }}\n{}",
            s.root().display(),
            claude.display(),
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
    // The bare CLI, and the bare CLI with a permission-prompt MCP server (this benchmark's own, minimal):
    // what any approval server costs the CLI (it starts the server first and shuts it down last).
    let approval_server = json!({"mcpServers": {"televibe": {
        "command": std::env::current_exe().unwrap(), "env": {"TVBENCH_AGENT": "mcp"}}}})
    .to_string();
    let bare_run = |with_server: bool| {
        let t = Instant::now();
        let mut c = std::process::Command::new(&claude);
        c.args(["-p", "--output-format", "stream-json", "--verbose"])
            .current_dir(&scratch)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if with_server {
            c.args(["--mcp-config", &approval_server])
                .args(["--permission-prompt-tool", "mcp__televibe__approval_prompt"]);
        }
        for (k, v) in &env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"SAY_HI\n").unwrap();
        assert!(child.wait().unwrap().success());
        t.elapsed()
    };
    let (mut bare, mut served, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..6 {
        bare.push(bare_run(false));
        served.push(bare_run(true));
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
    // The first of each warms caches (the CLI's own files, the page cache); it is not counted.
    let (bare, served, e2e) = (
        Samples::of(&bare[1..]),
        Samples::of(&served[1..]),
        Samples::of(&e2e[1..]),
    );
    let overhead = e2e.p50() - bare.p50();
    let ours = e2e.p50() - served.p50();
    vec![
        Figure::new(
            NAME,
            format!("{} (end to end {})", ms(overhead), e2e.show()),
            format!("bare CLI {}", bare.show()),
        )
        .target("≤ 100 ms", overhead <= 100.0)
        .data(json!({"overhead_ms": overhead, "e2e": e2e.json(), "bare": bare.json()})),
        Figure::new(
            "SAY_HI end to end, overhead over the bare CLI with a minimal approval MCP server",
            ms(ours),
            format!("bare CLI with the server {}", served.show()),
        )
        .data(json!({"overhead_ms": ours, "bare_with_server": served.json()})),
    ]
}

/// Maps an instant of this process to wall-clock nanoseconds.
struct Clock {
    at: Instant,
    wall: u128,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            at: Instant::now(),
            wall: now_ns(),
        }
    }

    fn wall(&self, i: Instant) -> f64 {
        let delta = if i >= self.at {
            i.duration_since(self.at).as_nanos() as f64
        } else {
            -(self.at.duration_since(i).as_nanos() as f64)
        };
        self.wall as f64 + delta
    }
}

/// `TVBENCH <ns> <what>` marks of a job's log, as (what, ns).
pub fn marks(root: &Path, job_id: &str) -> Vec<(String, u128)> {
    let log = std::fs::read_to_string(root.join(format!("orchestrator/logs/jobs/{job_id}.log")))
        .unwrap_or_default();
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("TVBENCH ")? + 8..];
            let (ns, what) = rest.split_once(' ')?;
            Some((what.to_string(), ns.parse().ok()?))
        })
        .collect()
}

async fn newest_job(d: &Setup) -> String {
    let mcp = d.mcp().await;
    let jobs = mcp.call("list_jobs", json!({"limit": 1})).await.unwrap();
    let id = jobs["jobs"][0]["id"].as_str().unwrap().to_string();
    mcp.call("wait_job", json!({"job_id": id, "timeout_secs": 120}))
        .await
        .unwrap();
    mcp.close().await;
    id
}

/// An agent's stdout line (a tool use) → the tracker edit that shows it, with pacing out of the way (the
/// lines are 1.3 s apart).
pub async fn line_to_telegram(bin: &Path) -> Vec<Figure> {
    let tg = FakeTelegram::start().await;
    let user = 5001;
    let s = Setup::new(bin, &format!("{}{}", bench_agent(), telegram(&tg, &[user])));
    make_repo(&s.root().join("repos/app"), 0);
    let d = s.start(Some(TOKEN));
    say(&tg, user, "/register app", &|t| t.contains("Registered")).await;
    say(&tg, user, "/new app", &|t| t.contains("S1")).await;
    let clock = Clock::now();
    tg.send_text(user, "lines 16 1300");
    let id = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mcp = s.mcp().await;
        let jobs = mcp.call("list_jobs", json!({"limit": 1})).await.unwrap();
        mcp.close().await;
        if let Some(id) = jobs["jobs"][0]["id"].as_str() {
            break id.to_string();
        }
    };
    let _ = newest_job(&s).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut lat = Vec::new();
    for (what, ns) in marks(&s.root(), &id) {
        if !what.starts_with("mark") {
            continue;
        }
        if let Some(at) = first_out(&tg, user, clock.at, &|t| t.contains(&what)) {
            lat.push((clock.wall(at) - ns as f64) / 1e6);
        }
    }
    drop(d);
    let lat = Samples::ms(lat);
    vec![
        Figure::new(
            "agent stdout line → Telegram call (pacing out of the way)",
            lat.show(),
            "-".into(),
        )
        .data(lat.json()),
    ]
}

/// 50 jobs in 50 sessions (ten per chat, five chats), each printing 20,000 lines as fast as it can.
pub async fn load(bin: &Path) -> Vec<Figure> {
    const JOBS: usize = 50;
    const LINES: usize = 20_000;
    let tg = FakeTelegram::start().await;
    let users = [5001, 5002, 5003, 5004, 5005];
    let s = Setup::new(
        bin,
        &format!(
            "{}{}[jobs]\nmax_concurrent = {JOBS}\n[sessions]\nmax_per_project = {JOBS}\nmax_total = {JOBS}\n",
            bench_agent(),
            telegram(&tg, &users)
        ),
    );
    make_repo(&s.root().join("repos/app"), 0);
    let d: Daemon = s.start(Some(TOKEN));
    say(&tg, users[0], "/register app", &|t| {
        t.contains("Registered")
    })
    .await;
    for i in 0..JOBS {
        let n = i + 1;
        say(&tg, users[i % users.len()], "/new app", &|t| {
            t.contains(&format!("S{n}<"))
        })
        .await;
    }
    let mcp = s.mcp().await;
    let (cpu0, started) = (d.cpu(), Instant::now());
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let q = mcp
            .call(
                "run_instruction",
                json!({"session_id": format!("S{}", i + 1), "instruction": format!("flood {LINES}")}),
            )
            .await
            .unwrap();
        ids.push(q["id"].as_str().unwrap().to_string());
    }
    let mut peak = 0;
    for id in &ids {
        loop {
            let w = mcp
                .call("wait_job", json!({"job_id": id, "timeout_secs": 1}))
                .await
                .unwrap();
            peak = peak.max(d.rss().0);
            if w["timed_out"] == false {
                assert_eq!(w["status"], "done", "{w}");
                break;
            }
        }
    }
    let (cpu, took) = (d.cpu() - cpu0, started.elapsed());
    // Every tracker shows its job done.
    let shown = until(Duration::from_secs(120), || {
        let finals = ids
            .iter()
            .filter(|id| {
                tg.calls().iter().any(|c| {
                    let t = c.params.get("text").and_then(|t| t.as_str()).unwrap_or("");
                    c.error.is_none() && t.contains(&id[..8]) && t.contains("✅")
                })
            })
            .count();
        (finals == JOBS).then(|| started.elapsed())
    })
    .await;
    mcp.close().await;
    let (_, hwm) = d.rss();
    let lost: usize = ids
        .iter()
        .map(|id| {
            let log =
                std::fs::read_to_string(s.root().join(format!("orchestrator/logs/jobs/{id}.log")))
                    .unwrap_or_default();
            let out = log.lines().filter(|l| l.contains(" stdout ")).count();
            // The init line, the lines, the result.
            (LINES + 2).saturating_sub(out)
        })
        .sum();
    let limited = tg.flood_limited();
    drop(d);
    let lines = (JOBS * LINES) as f64;
    vec![
        Figure::new(
            "load: 50 jobs × 20,000 lines, daemon CPU per line",
            format!(
                "{:.1} µs/line ({:.1} s CPU over {:.1} s)",
                cpu.as_secs_f64() * 1e6 / lines,
                cpu.as_secs_f64(),
                took.as_secs_f64()
            ),
            "-".into(),
        )
        .data(json!({"cpu_s": cpu.as_secs_f64(), "wall_s": took.as_secs_f64(), "lines": lines})),
        Figure::new(
            "load: peak RSS",
            format!("{} (sampled {}; VmHWM)", mb(hwm), mb(peak)),
            "-".into(),
        )
        .data(json!({"vmhwm": hwm, "sampled_peak": peak})),
        Figure::new(
            "load: lines lost · 429s earned · all trackers final after",
            format!(
                "{lost} · {} · {}",
                limited.len(),
                shown.map_or("not within 120 s".into(), |t| format!(
                    "{:.1} s",
                    t.as_secs_f64()
                ))
            ),
            "-".into(),
        )
        .target("0 lost, 0 × 429", lost == 0 && limited.is_empty())
        .data(json!({"lost": lost, "flood_limited": limited.len()})),
    ]
}

//! The benchmark as an agent: the daemon runs this same binary (with `TVBENCH_AGENT=1` in `agent.env`),
//! which acts on the instruction it reads from stdin and prints stream-json like the agent CLI. It marks
//! what it does on stderr as `TVBENCH <unix nanoseconds> <what>`, which lands in the job's log.

use std::io::{BufRead, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn mark(what: &str) {
    eprintln!("TVBENCH {} {what}", now_ns());
}

fn result(out: &mut impl Write, text: &str) {
    let _ = writeln!(
        out,
        r#"{{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"{text}"}}"#
    );
    let _ = out.flush();
}

fn tool(out: &mut impl Write, i: usize, target: &str) {
    let _ = writeln!(
        out,
        r#"{{"type":"assistant","message":{{"content":[{{"type":"tool_use","id":"toolu_{i}","name":"Bash","input":{{"command":"{target}"}}}}]}}}}"#
    );
    let _ = writeln!(
        out,
        r#"{{"type":"user","message":{{"content":[{{"type":"tool_result","tool_use_id":"toolu_{i}","is_error":false}}]}}}}"#
    );
}

/// A minimal stdio MCP server offering `approval_prompt` (`TVBENCH_AGENT=mcp`): what the agent CLI costs
/// when it has a permission-prompt server at all, whoever serves it.
pub fn mcp_server() {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let Ok(m) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let Some(id) = m.get("id").cloned() else {
            continue;
        };
        let result = match m["method"].as_str() {
            Some("initialize") => serde_json::json!({
                "protocolVersion": m["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "bench", "version": "1"}}),
            Some("tools/list") => serde_json::json!({"tools": [{"name": "approval_prompt",
                "description": "approval", "inputSchema": {"type": "object"}}]}),
            _ => serde_json::json!({}),
        };
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result})
        );
        let _ = out.flush();
    }
}

/// Runs the instruction: `spawn`, `lines <n> <gap ms>`, `hang`, or `flood <n>`.
pub fn run() {
    mark("spawn");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| {
        words
            .get(i)
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or(1)
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(
        out,
        r#"{{"type":"system","subtype":"init","session_id":"bench-conv"}}"#
    );
    let _ = out.flush();
    match words.first().copied() {
        Some("lines") => {
            // Two pauses before the first line: the tracker's own first edit (started) is a second
            // behind its creation.
            std::thread::sleep(Duration::from_millis(num(2)));
            for i in 0..num(1) as usize {
                // The pause first, so the tracker's own edits (started) are out of the way.
                std::thread::sleep(Duration::from_millis(num(2)));
                let target = format!("mark{i:03}");
                mark(&target);
                // The tool use alone: its result would be a second change, held a second by the
                // tracker's edit gap, which is pacing, not latency.
                let _ = writeln!(
                    out,
                    r#"{{"type":"assistant","message":{{"content":[{{"type":"tool_use","id":"toolu_{i}","name":"Bash","input":{{"command":"{target}"}}}}]}}}}"#
                );
                let _ = out.flush();
            }
            result(&mut out, "lines done");
        }
        Some("hang") => {
            mark("quiet");
            std::thread::sleep(Duration::from_secs(3600));
        }
        Some("flood") => {
            let n = num(1) as usize;
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
            let mut i = 0;
            while i < n {
                if i % 100 == 0 && i + 1 < n {
                    tool(&mut out, i, &format!("step {i}"));
                    i += 2;
                } else {
                    let _ = writeln!(
                        out,
                        r#"{{"type":"assistant","message":{{"content":[{{"type":"text","text":"line {i}"}}]}}}}"#
                    );
                    i += 1;
                }
            }
            result(&mut out, "flood done");
        }
        _ => result(&mut out, "ok"),
    }
}

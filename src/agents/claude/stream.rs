//! Claude Code's `--output-format stream-json`: one JSON object per line, parsed into agent events.
//!
//! Unknown types and subtypes are kept raw (and logged in the job log by the runner); a line that is not
//! JSON becomes `Malformed`. Nothing here can fail the job.

use serde_json::Value;

use crate::agents::{AgentEvent, AgentResult, UsageReport, UsageWindow};

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn i(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}

/// Parses one stdout line into zero or more events (an assistant message may carry several blocks).
pub fn parse_line(line: &str) -> Vec<AgentEvent> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Vec::new();
    }
    let v: Value = match serde_json::from_str(trimmed) {
        Ok(v @ Value::Object(_)) => v,
        _ => return vec![AgentEvent::Malformed(line.to_string())],
    };
    match (
        v.get("type").and_then(Value::as_str),
        v.get("subtype").and_then(Value::as_str),
    ) {
        (Some("system"), Some("init")) => match s(&v, "session_id") {
            Some(session_id) => vec![AgentEvent::Conversation {
                id: session_id,
                model: s(&v, "model"),
            }],
            None => vec![AgentEvent::Unknown(v)],
        },
        (Some("system"), Some("api_retry")) => vec![AgentEvent::ApiRetry {
            attempt: i(&v, "attempt").unwrap_or(0),
            max_retries: i(&v, "max_retries").unwrap_or(0),
            error_status: i(&v, "error_status"),
            error: s(&v, "error"),
            retry_delay_ms: i(&v, "retry_delay_ms"),
        }],
        (Some("rate_limit_event"), _) => match v.get("rate_limit_info") {
            Some(info) => vec![AgentEvent::Usage(usage_report(info))],
            None => vec![AgentEvent::Unknown(v)],
        },
        (Some("system"), Some("permission_denied")) => vec![AgentEvent::PermissionDenied {
            tool_name: s(&v, "tool_name").unwrap_or_default(),
            message: s(&v, "message").unwrap_or_default(),
        }],
        // A subscriber's usage limit: the refusal and its reset, in the message's structured fields.
        (Some("assistant"), _) if s(&v, "api_error").as_deref() == Some("usage_limit_reached") => {
            let info = &v["api_error_params"]["rate_limit_info"];
            let mut report = usage_report(info);
            report.limited = true;
            vec![AgentEvent::Usage(report)]
        }
        (Some("assistant"), _) => blocks(&v)
            .filter_map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => s(b, "text").map(AgentEvent::Text),
                Some("tool_use") => Some(AgentEvent::ToolUse {
                    id: s(b, "id").unwrap_or_default(),
                    name: s(b, "name").unwrap_or_default(),
                    input: b.get("input").cloned().unwrap_or(Value::Null),
                }),
                _ => None,
            })
            .collect(),
        (Some("user"), _) => blocks(&v)
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .map(|b| AgentEvent::ToolResult {
                tool_use_id: s(b, "tool_use_id").unwrap_or_default(),
                is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            })
            .collect(),
        (Some("result"), _) => vec![AgentEvent::Result(AgentResult {
            subtype: s(&v, "subtype").unwrap_or_default(),
            is_error: v.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            num_turns: i(&v, "num_turns"),
            total_cost_usd: v.get("total_cost_usd").and_then(Value::as_f64),
            input_tokens: v.get("usage").and_then(|u| i(u, "input_tokens")),
            output_tokens: v.get("usage").and_then(|u| i(u, "output_tokens")),
            result: s(&v, "result"),
            model_api_status: i(&v, "api_error_status"),
            terminal_reason: s(&v, "terminal_reason"),
            permission_denials: v
                .get("permission_denials")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
        })],
        _ => vec![AgentEvent::Unknown(v)],
    }
}

/// A `rate_limit_info` object: `status` (`allowed`, `allowed_warning`, `rejected`), `resetsAt` (Unix
/// seconds), `rateLimitType`, and `unifiedWindows` (each with `utilization` 0–1, `resetsAt`, `status`).
fn usage_report(info: &Value) -> UsageReport {
    let limited = s(info, "status").as_deref() == Some("rejected");
    let mut windows: Vec<UsageWindow> = info
        .get("unifiedWindows")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, w)| UsageWindow {
            name: name.clone(),
            used_percent: w
                .get("utilization")
                .and_then(Value::as_f64)
                .map(|u| u * 100.0),
            resets_at: i(w, "resetsAt"),
            window_minutes: None,
            limited: s(w, "status").as_deref() == Some("rejected"),
        })
        .collect();
    if let Some(name) = s(info, "rateLimitType")
        && !windows.iter().any(|w| w.name == name)
    {
        windows.push(UsageWindow {
            name,
            used_percent: None,
            resets_at: i(info, "resetsAt"),
            window_minutes: None,
            limited,
        });
    }
    UsageReport {
        limited,
        resets_at: i(info, "resetsAt"),
        windows,
    }
}

fn blocks(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("message")
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::tool_target;

    fn capture(name: &str) -> Vec<AgentEvent> {
        let path = format!(
            "{}/tests/data/claude-code-2.1.328/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .flat_map(parse_line)
            .collect()
    }

    #[test]
    fn approved_tool_run() {
        let ev = capture("approved-tool-run.jsonl");
        assert!(
            matches!(&ev[0], AgentEvent::Conversation { id, .. } if id == "d8da5358-7310-4dba-9c07-994e6eb34027")
        );
        assert!(
            matches!(&ev[1], AgentEvent::ToolUse { name, input, .. } if name == "Bash" && tool_target(name, input) == "echo hello > hello.txt")
        );
        assert!(matches!(
            &ev[2],
            AgentEvent::ToolResult {
                is_error: false,
                ..
            }
        ));
        assert!(matches!(&ev[3], AgentEvent::Text(t) if t == "All done: created hello.txt."));
        let AgentEvent::Result(r) = &ev[4] else {
            panic!("{:?}", ev[4])
        };
        assert_eq!(
            (r.is_error, r.num_turns, r.subtype.as_str()),
            (false, Some(2), "success")
        );
        assert_eq!(r.terminal_reason.as_deref(), Some("completed"));
        assert_eq!(r.input_tokens, Some(20));
        assert_eq!(r.output_tokens, Some(24));
    }

    #[test]
    fn api_error_400() {
        let ev = capture("error-400.jsonl");
        let AgentEvent::Result(r) = ev.last().unwrap() else {
            panic!()
        };
        assert!(r.is_error);
        assert_eq!(
            r.subtype, "success",
            "Claude Code reports API errors with subtype success"
        );
        assert_eq!(r.model_api_status, Some(400));
        assert_eq!(r.terminal_reason.as_deref(), Some("api_error"));
    }

    #[test]
    fn permission_denied_and_retries() {
        let ev = capture("permission-denied-run.jsonl");
        assert!(ev.iter().any(
            |e| matches!(e, AgentEvent::PermissionDenied { tool_name, .. } if tool_name == "Bash")
        ));
        assert!(matches!(ev.last().unwrap(), AgentEvent::Result(r) if r.permission_denials == 1));
        let ev = capture("auth-error-retrying.partial.jsonl");
        assert!(matches!(
            &ev[1],
            AgentEvent::ApiRetry {
                attempt: 1,
                max_retries: 10,
                error_status: Some(401),
                ..
            }
        ));
    }

    #[test]
    fn a_subscribers_usage_limit_is_read_from_its_fields() {
        let ev = capture("usage-limit/oauth-reset40s-default-retries.jsonl");
        let reports: Vec<&UsageReport> = ev
            .iter()
            .filter_map(|e| match e {
                AgentEvent::Usage(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(reports.len(), 2, "{ev:?}");
        assert!(reports.iter().all(|r| r.limited));
        assert!(reports.iter().all(|r| r.resets_at == Some(1796596749)));
        let five = reports[0]
            .windows
            .iter()
            .find(|w| w.name == "five_hour")
            .unwrap();
        assert_eq!(
            (five.used_percent, five.resets_at, five.limited),
            (Some(100.0), Some(1796596749), true)
        );
        let week = reports[0]
            .windows
            .iter()
            .find(|w| w.name == "seven_day")
            .unwrap();
        assert_eq!((week.used_percent, week.limited), (Some(50.0), false));
        assert!(
            !ev.iter().any(|e| matches!(e, AgentEvent::Text(_))),
            "the limit's prose is not taken for the agent's text"
        );
        let AgentEvent::Result(r) = ev.last().unwrap() else {
            panic!()
        };
        assert_eq!(r.model_api_status, Some(429));
        let after = capture("usage-limit/oauth-resume-run2-after-reset.jsonl");
        assert!(
            after
                .iter()
                .any(|e| matches!(e, AgentEvent::Usage(r) if !r.limited))
        );
    }

    #[test]
    fn an_api_keys_limit_is_a_retry_with_its_delay_or_a_429_result() {
        let ev = capture("usage-limit/apikey-reset40s-default-retries.jsonl");
        assert!(ev.iter().any(|e| matches!(
            e,
            AgentEvent::ApiRetry {
                error_status: Some(429),
                retry_delay_ms: Some(41010),
                ..
            }
        )));
        let ev = capture("usage-limit/apikey-reset400s-default-retries.jsonl");
        assert!(!ev.iter().any(|e| matches!(e, AgentEvent::Usage(_))));
        let AgentEvent::Result(r) = ev.last().unwrap() else {
            panic!()
        };
        assert_eq!((r.is_error, r.model_api_status), (true, Some(429)));
    }

    #[test]
    fn malformed_and_unknown_lines_are_kept() {
        assert!(matches!(
            &parse_line("not json {")[0],
            AgentEvent::Malformed(_)
        ));
        assert!(matches!(&parse_line("[1,2]")[0], AgentEvent::Malformed(_)));
        assert!(matches!(
            &parse_line(r#"{"type":"rate_limit_event","x":1}"#)[0],
            AgentEvent::Unknown(_)
        ));
        assert!(matches!(
            &parse_line(r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}"#)[0],
            AgentEvent::Usage(UsageReport {
                limited: false,
                resets_at: None,
                ..
            })
        ));
        assert!(matches!(
            &parse_line(r#"{"type":"system","subtype":"compact_boundary"}"#)[0],
            AgentEvent::Unknown(_)
        ));
        assert!(parse_line("   ").is_empty());
    }

    #[test]
    fn tool_targets_are_one_short_line() {
        let input = serde_json::json!({
            "command": "cargo test\n--release",
            "file_path": "/w/a.rs",
            "pattern": "fn main",
            "url": "https://example.com",
            "query": "rust mutation testing",
        });
        for (name, want) in [
            ("Bash", "cargo test --release"),
            ("Read", "/w/a.rs"),
            ("Write", "/w/a.rs"),
            ("Edit", "/w/a.rs"),
            ("NotebookEdit", "/w/a.rs"),
            ("Grep", "fn main"),
            ("Glob", "fn main"),
            ("WebFetch", "https://example.com"),
            ("WebSearch", "rust mutation testing"),
            ("Task", ""),
        ] {
            assert_eq!(tool_target(name, &input), want, "{name}");
        }
        let notebook = serde_json::json!({"notebook_path": "/w/n.ipynb"});
        assert_eq!(tool_target("NotebookEdit", &notebook), "/w/n.ipynb");
        let fits = "é".repeat(120);
        assert_eq!(
            tool_target("Bash", &serde_json::json!({ "command": fits })),
            fits
        );
        let long = "é".repeat(121);
        assert_eq!(
            tool_target("Bash", &serde_json::json!({ "command": long })),
            format!("{}…", "é".repeat(119))
        );
    }
}

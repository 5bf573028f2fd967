//! What people read: Telegram HTML (only `<`, `>` and `&` escaped; agent output is untrusted text),
//! job trackers, errors and lists, cut to Telegram's limits.

use crate::errors::CoreError;
use crate::store::{Job, JobStatus, Project, Session};

/// Telegram's limit for a message text (after entities are parsed).
pub const MAX_TEXT: usize = 4096;

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            _ => out.push(c),
        }
    }
    out
}

/// The first `max` characters of `text`, with an ellipsis when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!(
            "{}…",
            text.chars().take(max.saturating_sub(1)).collect::<String>()
        )
    }
}

pub fn code(text: &str) -> String {
    format!("<code>{}</code>", escape(text))
}

/// A refused request, for people: what went wrong, and what to do.
pub fn error(e: &CoreError) -> String {
    format!(
        "❌ <b>{}</b>\n{}\n<i>{}</i>",
        escape(&e.code.to_string()),
        escape(&e.message),
        escape(&e.suggestion)
    )
}

pub fn status_icon(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "⏳",
        JobStatus::Running => "⚙️",
        JobStatus::WaitingApproval => "✋",
        JobStatus::Done => "✅",
        JobStatus::Failed => "❌",
        JobStatus::Canceled => "🚫",
    }
}

pub fn tool_icon(tool: &str) -> &'static str {
    match tool {
        "Bash" => "💻",
        "Write" | "Edit" | "NotebookEdit" => "✏️",
        "Read" => "📖",
        "Grep" | "Glob" => "🔎",
        "WebFetch" | "WebSearch" => "🌐",
        _ => "🔧",
    }
}

/// One line of the tracker's recent tool list.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolLine {
    pub tool: String,
    pub target: String,
    pub done: bool,
    pub failed: bool,
}

/// The state a tracker message shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracker {
    pub job_id: String,
    pub session_id: String,
    pub project_id: String,
    pub instruction: String,
    pub status: Option<JobStatus>,
    pub tools: Vec<ToolLine>,
    pub started_unix: Option<i64>,
    pub finished_secs: Option<f64>,
    pub turns: Option<i64>,
    pub cost: Option<f64>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub files: Vec<String>,
    pub diff_stat: Option<String>,
}

/// How many recent tool events a tracker shows.
pub const TRACKER_TOOLS: usize = 6;

impl Tracker {
    pub fn is_final(&self) -> bool {
        self.status.is_some_and(JobStatus::is_final)
    }

    pub fn render(&self) -> String {
        let status = self.status.unwrap_or(JobStatus::Queued);
        let mut out = format!(
            "{} <b>Job {}</b> · Session {} · {}\n<i>{}</i>\n",
            status_icon(status),
            escape(&self.job_id.chars().take(8).collect::<String>()),
            escape(&self.session_id),
            escape(&self.project_id),
            escape(&cut(&self.instruction, 200))
        );
        let skip = self.tools.len().saturating_sub(TRACKER_TOOLS);
        for t in &self.tools[skip..] {
            let mark = if t.failed {
                "✗"
            } else if t.done {
                "✓"
            } else {
                "…"
            };
            out.push_str(&format!(
                "{} {} {} {}\n",
                tool_icon(&t.tool),
                escape(&t.tool),
                code(&cut(&t.target, 80)),
                mark
            ));
        }
        let elapsed = match (self.finished_secs, self.started_unix) {
            (Some(s), _) => Some(s as i64),
            (None, Some(start)) => Some((chrono::Utc::now().timestamp() - start).max(0)),
            _ => None,
        };
        let mut facts = vec![format!("status: {}", status.as_str())];
        if let Some(e) = elapsed {
            facts.push(format!("{}m{:02}s", e / 60, e % 60));
        }
        if let Some(t) = self.turns {
            facts.push(format!("{t} turns"));
        }
        if let Some(c) = self.cost {
            facts.push(format!("${c:.4}"));
        }
        out.push_str(&format!("<i>{}</i>\n", escape(&facts.join(" · "))));
        if let Some(e) = &self.error {
            out.push_str(&format!("⚠️ {}\n", escape(&cut(e, 500))));
        }
        if let Some(r) = &self.result {
            out.push_str(&format!("\n{}\n", escape(&cut(r, 1500))));
        }
        if !self.files.is_empty() {
            let shown: Vec<String> = self.files.iter().take(10).map(|f| code(f)).collect();
            let more = self.files.len().saturating_sub(10);
            out.push_str(&format!(
                "\n📁 {}{}\n",
                shown.join(", "),
                if more > 0 {
                    format!(" +{more}")
                } else {
                    String::new()
                }
            ));
        }
        if let Some(d) = &self.diff_stat {
            out.push_str(&format!("{}\n", escape(d)));
        }
        cut_html(&out)
    }
}

/// Keeps a rendered message under the limit (the parts that grow are escaped text, so cutting at a line
/// boundary keeps the markup balanced).
pub fn cut_html(html: &str) -> String {
    if html.chars().count() <= MAX_TEXT - 100 {
        return html.to_string();
    }
    let mut out = String::new();
    for line in html.lines() {
        if out.chars().count() + line.chars().count() + 1 > MAX_TEXT - 100 {
            out.push('…');
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

pub fn project_line(p: &Project) -> String {
    format!(
        "• <b>{}</b> {} ({})",
        escape(&p.id),
        code(&p.repo_path),
        escape(&p.default_branch)
    )
}

pub fn session_line(s: &Session, active: bool) -> String {
    format!(
        "{}<b>{}</b> {} {} · {}{}",
        if active { "▶️ " } else { "• " },
        escape(&s.id),
        escape(&s.project_id),
        code(&s.branch),
        escape(s.state.as_str()),
        if s.worktree_missing {
            " · ⚠️ worktree missing"
        } else {
            ""
        }
    )
}

pub fn job_line(j: &Job) -> String {
    format!(
        "{} {} {} {}",
        status_icon(j.status),
        code(&j.id.chars().take(8).collect::<String>()),
        escape(&j.session_id),
        escape(&cut(
            &j.instruction
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            60
        ))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_handles_agent_output() {
        assert_eq!(
            escape("<script>&amp;</script>"),
            "&lt;script&gt;&amp;amp;&lt;/script&gt;"
        );
        let t = Tracker {
            job_id: "550e8400-e29b".into(),
            session_id: "S1".into(),
            project_id: "app".into(),
            instruction: "fix <b> & </i>".into(),
            status: Some(JobStatus::Running),
            tools: vec![ToolLine {
                tool: "Bash".into(),
                target: "echo 1 > a && cat <b".into(),
                done: true,
                failed: false,
            }],
            ..Default::default()
        };
        let html = t.render();
        assert!(html.contains("fix &lt;b&gt; &amp; &lt;/i&gt;"), "{html}");
        assert!(
            html.contains("<code>echo 1 &gt; a &amp;&amp; cat &lt;b</code>"),
            "{html}"
        );
    }

    #[test]
    fn long_results_stay_under_the_limit() {
        let t = Tracker {
            job_id: "j".into(),
            result: Some("x\n".repeat(5000)),
            status: Some(JobStatus::Done),
            ..Default::default()
        };
        assert!(t.render().chars().count() <= MAX_TEXT);
    }
}

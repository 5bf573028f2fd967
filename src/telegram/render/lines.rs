//! One line per project, session or job, as the chat's lists show them.

use super::{code, cut, escape, status_icon};
use crate::domain::{Job, Project, Session};

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
        "{}<b>{}</b> {} {} · {} · {}{}{}{}{}",
        if active { "▶️ " } else { "• " },
        escape(&s.id),
        escape(&s.project_id),
        code(&s.branch),
        escape(&s.agent),
        escape(s.state.as_str()),
        s.waiting
            .as_deref()
            .map(|w| format!(" · ⏸ {}", escape(w)))
            .unwrap_or_default(),
        if s.worktree_missing {
            " · ⚠️ worktree missing"
        } else {
            ""
        },
        s.node
            .as_deref()
            .map(|n| format!(" · on {}", escape(n)))
            .unwrap_or_default(),
        s.unavailable
            .as_deref()
            .map(|u| format!(" · ⛔ {}", escape(u)))
            .unwrap_or_default()
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

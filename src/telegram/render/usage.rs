//! `/usage`: what the agents reported of their usage limits, as the chat shows it.

use super::escape;

/// `/usage`: each agent's known limit windows and when they reset.
pub fn usage(agents: &[crate::core::jobs::usage::AgentUsage]) -> String {
    use crate::core::jobs::usage::{agent_title, resume_time};
    let mut out = String::from("<b>Usage limits</b>");
    for a in agents {
        let state = match a.limited_until {
            Some(until) => format!("⏸ limited; work resumes at {}", resume_time(until)),
            None if a.updated_at.is_none() => "nothing reported yet".into(),
            None => "✅ not limited".into(),
        };
        out.push_str(&format!(
            "\n\n<b>{}</b>: {}",
            escape(agent_title(&a.agent)),
            escape(&state)
        ));
        for w in &a.windows {
            let mut facts = Vec::new();
            if let Some(p) = w.used_percent {
                facts.push(format!("{p:.0}% used"));
            }
            if let Some(t) = w.resets_at {
                facts.push(format!("resets {}", resume_time(t)));
            }
            if w.limited {
                facts.push("limited".into());
            }
            out.push_str(&format!(
                "\n• {}: {}",
                escape(&w.name),
                escape(&facts.join(" · "))
            ));
        }
        if let Some(at) = a.updated_at {
            let ago = (chrono::Utc::now().timestamp() - at).max(0) / 60;
            out.push_str(&format!("\n<i>reported {ago} min ago</i>"));
        }
    }
    out
}

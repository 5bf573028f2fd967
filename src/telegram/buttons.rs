//! The button codec: the callback data of approval and tracker buttons (each at most 64 bytes, Telegram's
//! limit) and what a tapped approval button decides.

use super::client::Button;
use crate::core::approvals::Choice;
use crate::domain::JobStatus;

/// The buttons of an approval request (callback data `ap:<32 hex>:<a|s|d|x>`, 37 bytes).
pub fn approval_buttons(approval_id: &str) -> Vec<Button> {
    vec![
        ("✅ Approve".into(), format!("ap:{approval_id}:a")),
        (
            "✅ Approve for this session".into(),
            format!("ap:{approval_id}:s"),
        ),
        ("❌ Deny".into(), format!("ap:{approval_id}:d")),
        ("⛔ Deny and stop".into(), format!("ap:{approval_id}:x")),
    ]
}

/// The buttons of a job tracker: Cancel while it runs, Log and Diff once done (each ≤ 64 bytes).
pub fn tracker_buttons(job_id: &str, status: JobStatus) -> Vec<Button> {
    if status.is_final() {
        vec![
            ("📜 Log".into(), format!("log:{job_id}")),
            ("🔀 Diff".into(), format!("diff:{job_id}")),
        ]
    } else {
        vec![("🚫 Cancel".into(), format!("cancel:{job_id}"))]
    }
}

/// The decision of an approval button's one-letter code.
pub fn choice(code: &str) -> Option<Choice> {
    match code {
        "a" => Some(Choice::ApproveOnce),
        "s" => Some(Choice::ApproveSession),
        "d" => Some(Choice::Deny),
        "x" => Some(Choice::DenyStop),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_button_fits_and_every_approval_code_decodes() {
        let id = uuid::Uuid::new_v4().to_string();
        for (_, data) in tracker_buttons(&id, JobStatus::Running)
            .into_iter()
            .chain(tracker_buttons(&id, JobStatus::Done))
            .chain(approval_buttons(&uuid::Uuid::new_v4().simple().to_string()))
        {
            assert!(data.len() <= 64, "{data}");
        }
        let codes: Vec<_> = approval_buttons("x")
            .into_iter()
            .map(|(_, d)| choice(d.rsplit(':').next().unwrap()))
            .collect();
        assert_eq!(
            codes,
            [
                Some(Choice::ApproveOnce),
                Some(Choice::ApproveSession),
                Some(Choice::Deny),
                Some(Choice::DenyStop)
            ]
        );
        assert_eq!(choice("z"), None);
    }
}

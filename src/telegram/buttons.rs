//! The button codec: what a button of ours asks for ([`ButtonAction`]) and its callback data (each at most
//! 64 bytes, Telegram's limit). The wire strings never change, so buttons sent by an earlier daemon still
//! work; data we never wrote decodes to nothing.

use super::client::Button;
use crate::core::approvals::Choice;
use crate::domain::JobStatus;

/// Telegram's limit on a button's callback data, in bytes.
pub const MAX_DATA: usize = 64;

/// What a tapped button asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonAction {
    /// `ap:<approval id>:<a|s|d|x>` (37 bytes with a 32-hex id): decide an approval request.
    Decide { approval_id: String, choice: Choice },
    /// `cancel:<job id>`: cancel a job that runs or waits.
    Cancel { job_id: String },
    /// `log:<job id>`: send a finished job's log.
    Log { job_id: String },
    /// `diff:<job id>`: send the diff of a finished job's session.
    Diff { job_id: String },
}

impl ButtonAction {
    /// The callback data.
    pub fn encode(&self) -> String {
        match self {
            ButtonAction::Decide {
                approval_id,
                choice,
            } => format!("ap:{approval_id}:{}", choice_code(*choice)),
            ButtonAction::Cancel { job_id } => format!("cancel:{job_id}"),
            ButtonAction::Log { job_id } => format!("log:{job_id}"),
            ButtonAction::Diff { job_id } => format!("diff:{job_id}"),
        }
    }

    /// The action of callback data we wrote; `None` for anything else (unknown verbs, missing or odd ids,
    /// unknown decision codes, more than Telegram carries).
    pub fn decode(data: &str) -> Option<ButtonAction> {
        if data.len() > MAX_DATA {
            return None;
        }
        let (verb, arg) = data.split_once(':')?;
        match verb {
            "ap" => {
                let (id, code) = arg.split_once(':')?;
                Some(ButtonAction::Decide {
                    approval_id: id_of(id)?,
                    choice: choice(code)?,
                })
            }
            "cancel" => Some(ButtonAction::Cancel {
                job_id: id_of(arg)?,
            }),
            "log" => Some(ButtonAction::Log {
                job_id: id_of(arg)?,
            }),
            "diff" => Some(ButtonAction::Diff {
                job_id: id_of(arg)?,
            }),
            _ => None,
        }
    }
}

/// An id as our buttons carry it: a UUID, with or without dashes.
fn id_of(s: &str) -> Option<String> {
    let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then(|| s.to_string())
}

/// The buttons of an approval request (callback data `ap:<32 hex>:<a|s|d|x>`, 37 bytes). A push
/// (`policy::PUSH_TOOL`) is approved once or denied: it has no "for this session", and denying ends it.
pub fn approval_buttons(approval_id: &str, tool: &str) -> Vec<Button> {
    let decide = |choice| {
        ButtonAction::Decide {
            approval_id: approval_id.to_string(),
            choice,
        }
        .encode()
    };
    if tool == crate::policy::PUSH_TOOL {
        return vec![
            ("✅ Approve push".into(), decide(Choice::ApproveOnce)),
            ("❌ Deny".into(), decide(Choice::Deny)),
        ];
    }
    vec![
        ("✅ Approve".into(), decide(Choice::ApproveOnce)),
        (
            "✅ Approve for this session".into(),
            decide(Choice::ApproveSession),
        ),
        ("❌ Deny".into(), decide(Choice::Deny)),
        ("⛔ Deny and stop".into(), decide(Choice::DenyStop)),
    ]
}

/// The buttons of a job tracker: Cancel while it runs, Log and Diff once done (each ≤ 64 bytes).
pub fn tracker_buttons(job_id: &str, status: JobStatus) -> Vec<Button> {
    let job_id = job_id.to_string();
    if status.is_final() {
        vec![
            (
                "📜 Log".into(),
                ButtonAction::Log {
                    job_id: job_id.clone(),
                }
                .encode(),
            ),
            ("🔀 Diff".into(), ButtonAction::Diff { job_id }.encode()),
        ]
    } else {
        vec![("🚫 Cancel".into(), ButtonAction::Cancel { job_id }.encode())]
    }
}

/// The one-letter code of an approval decision.
fn choice_code(choice: Choice) -> &'static str {
    match choice {
        Choice::ApproveOnce => "a",
        Choice::ApproveSession => "s",
        Choice::Deny => "d",
        Choice::DenyStop => "x",
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
            .chain(approval_buttons(
                &uuid::Uuid::new_v4().simple().to_string(),
                "Bash",
            ))
        {
            assert!(data.len() <= 64, "{data}");
        }
        let codes: Vec<_> = approval_buttons("x", "Bash")
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
        // A push is approved once or denied: nothing for the session.
        let push: Vec<_> = approval_buttons("x", crate::policy::PUSH_TOOL)
            .into_iter()
            .map(|(_, d)| choice(d.rsplit(':').next().unwrap()))
            .collect();
        assert_eq!(push, [Some(Choice::ApproveOnce), Some(Choice::Deny)]);
    }

    /// The wire strings of buttons already sent: they must keep decoding to the same action.
    #[test]
    fn the_wire_strings_stay_and_round_trip() {
        let job = "0b6f1c2e-5d4a-4f3b-9a8e-7c6d5e4f3a2b";
        let approval = "0b6f1c2e5d4a4f3b9a8e7c6d5e4f3a2b";
        let cases = [
            (
                format!("ap:{approval}:a"),
                ButtonAction::Decide {
                    approval_id: approval.into(),
                    choice: Choice::ApproveOnce,
                },
            ),
            (
                format!("ap:{approval}:s"),
                ButtonAction::Decide {
                    approval_id: approval.into(),
                    choice: Choice::ApproveSession,
                },
            ),
            (
                format!("ap:{approval}:d"),
                ButtonAction::Decide {
                    approval_id: approval.into(),
                    choice: Choice::Deny,
                },
            ),
            (
                format!("ap:{approval}:x"),
                ButtonAction::Decide {
                    approval_id: approval.into(),
                    choice: Choice::DenyStop,
                },
            ),
            (
                format!("cancel:{job}"),
                ButtonAction::Cancel { job_id: job.into() },
            ),
            (
                format!("log:{job}"),
                ButtonAction::Log { job_id: job.into() },
            ),
            (
                format!("diff:{job}"),
                ButtonAction::Diff { job_id: job.into() },
            ),
        ];
        for (wire, action) in cases {
            assert_eq!(action.encode(), wire);
            assert_eq!(ButtonAction::decode(&wire), Some(action), "{wire}");
        }
        let sent: Vec<String> = tracker_buttons(job, JobStatus::Running)
            .into_iter()
            .chain(tracker_buttons(job, JobStatus::Failed))
            .chain(approval_buttons(approval, "Bash"))
            .map(|(_, d)| d)
            .collect();
        for data in &sent {
            let action = ButtonAction::decode(data).unwrap_or_else(|| panic!("{data}"));
            assert_eq!(&action.encode(), data);
        }
    }

    #[test]
    fn stale_and_garbage_data_is_refused() {
        let long = format!("cancel:{}", "a".repeat(MAX_DATA));
        for data in [
            "",
            "rm -rf /",
            "cancel",
            "cancel:",
            "log:",
            "diff:",
            "ap:",
            "ap:abc",
            "ap:abc:",
            "ap::a",
            "ap:abc:z",
            "ap:abc:a:b",
            "ap:abc:aa",
            "AP:abc:a",
            "Cancel:abc",
            "stop:abc",
            "cancel:abc def",
            "cancel:../x",
            "cancel:abc:def",
            "log:<b>",
            "diff:é",
            &long,
        ] {
            assert_eq!(ButtonAction::decode(data), None, "{data:?}");
        }
    }
}

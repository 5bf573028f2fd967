//! Sessions: a branch plus a linked worktree of a project, one actor each under the `sessions` supervisor.
//!
//! Creation happens here under a lock (limits, numbering and branch checks cannot race): git first, then the
//! row, then the actor. Closing goes to the session's actor, which owns the session's state.

pub mod actor;
mod api;
mod files;
mod handle;
mod inbox;
mod nodes;
mod pull;
pub mod push;
mod upkeep;
mod work;

pub use files::{WorktreeFile, human_size};
pub use handle::SessionHandle;
pub use inbox::{INBOX, Saved, safe_name};
pub use pull::PullRequestOpened;
pub use upkeep::disk_usage;
pub use work::check_instruction;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::audit::AuditSubject;
use crate::core::Core;
use crate::domain::Session;
use crate::errors::{CoreError, ErrorCode};
use crate::supervisor::{ChildSpec, InitialChildren};
use actor::{SessionActor, SessionMsg};

/// The sessions service: create, list, close and recover sessions, and the typed way to their actors.
pub struct Sessions<'a> {
    pub(super) core: &'a Core,
}

/// What the sessions service owns.
#[derive(Default)]
pub struct State {
    /// Running session actors by session id (each registers itself when it starts).
    actors: std::sync::Mutex<std::collections::HashMap<String, ractor::ActorCell>>,
    /// Serialises session creation: limits, numbering and branch checks happen under it.
    create: tokio::sync::Mutex<()>,
    /// Label sets of `televibe_sessions_active` set last time, so vanished ones go back to 0.
    gauge_labels: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

impl Sessions<'_> {
    fn state(&self) -> &State {
        &self.core.sessions_state
    }
}

impl<'a> Sessions<'a> {
    /// The running session actors (registered by each actor as it starts, removed as it stops).
    pub(super) fn actors(
        &self,
    ) -> std::sync::MutexGuard<'a, std::collections::HashMap<String, ractor::ActorCell>> {
        self.core
            .sessions_state
            .actors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// What `close_session` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Closed {
    #[serde(flatten)]
    pub session: Session,
    pub branch_deleted: bool,
}

/// What `recover_session` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryAction {
    /// The worktree was added again at the same path on the same branch.
    WorktreeRecreated,
    /// The worktree had been put back by hand; only the mark was cleared.
    WorktreeFound,
    /// Git could not add it in place: the session was closed and a new one opened on its branch.
    Replaced,
}

/// What `recover_session` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    pub action: RecoveryAction,
    /// The session that was asked for.
    pub session_id: String,
    /// The session to work in now: the same one, or its replacement.
    pub session: Session,
    /// One sentence saying which of the two happened.
    pub message: String,
    /// Queued jobs of a replaced session, canceled with it.
    pub jobs_canceled: usize,
}

/// Whether a session's worktree is on disk: its directory with the `.git` link git put there. A directory
/// without it (files copied back by hand) is not a worktree git or a job could use.
pub fn worktree_present(path: &Path) -> bool {
    path.is_dir() && path.join(".git").exists()
}

pub fn session_not_found(id: &str) -> CoreError {
    CoreError::new(
        ErrorCode::SessionNotFound,
        format!("no session {id:?}"),
        "list sessions with list_sessions; ids look like S12",
    )
}

/// The child spec of one session actor.
pub fn session_child(core: &Arc<Core>, id: &str) -> ChildSpec {
    let core = core.clone();
    let sid = id.to_string();
    ChildSpec::new(&format!("session:{id}"), move || {
        (
            SessionActor {
                core: core.clone(),
                id: sid.clone(),
            },
            (),
        )
    })
    .transient()
    .with_drill(Arc::new(|cell, what| {
        let r: ractor::ActorRef<SessionMsg> = cell.clone().into();
        r.cast(SessionMsg::Drill(what.to_string()))
            .map_err(|e| e.to_string())
    }))
    .with_below(Arc::new(|cell| {
        Box::pin(async move {
            let r: ractor::ActorRef<SessionMsg> = cell.into();
            ractor::call_t!(r, SessionMsg::Below, 1000).unwrap_or_default()
        })
    }))
}

/// Boot reconciliation, run whenever the `sessions` supervisor starts; returns one child per open session.
pub fn initial_sessions(core: Arc<Core>) -> InitialChildren {
    Arc::new(move || {
        let core = core.clone();
        Box::pin(async move {
            core.approvals().expire_orphaned_approvals().await;
            core.jobs().recover_jobs().await?;
            core.sessions().reconcile_sessions().await?;
            let open = core.store().sessions(None, false).await?;
            core.sessions().refresh_session_metrics().await;
            // One actor per open session this node hosts.
            Ok(open
                .iter()
                .filter(|s| core.cluster().hosts(s))
                .map(|s| session_child(&core, &s.id))
                .collect())
        })
    })
}

pub fn subject(s: &Session) -> AuditSubject {
    AuditSubject::session(s)
}

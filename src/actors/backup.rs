//! The `backup` actor: runs a verified backup of `state.db` on `backup.schedule` (and once at start when a
//! scheduled run was missed while the daemon was down), and on demand for `televibe backup now`.
//!
//! The schedule is evaluated every second against the clock rather than with one long timer, so a
//! suspended machine or a changed clock cannot push a run far past its time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::backup::{Outcome, Runner, Schedule};
use crate::core::Core;
use crate::core::events::{Event, Scope};
use crate::supervisor::ChildMessage;

pub struct BackupActor {
    pub core: Arc<Core>,
}

pub enum BackupMsg {
    /// Runs the scheduled backup when its time has come.
    Tick,
    /// A backup now (`backup_now`), answered with its outcome.
    RunNow(RpcReplyPort<Result<Outcome, String>>),
    Panic,
}

impl ChildMessage for BackupMsg {
    fn injected_panic() -> Self {
        BackupMsg::Panic
    }
}

pub struct BackupState {
    schedule: Schedule,
    /// When the next scheduled run is due.
    next: Option<DateTime<Utc>>,
}

impl BackupActor {
    /// The scheduler's clock: UTC now, shifted by `debug.backup_clock_offset_secs` when test hooks are on.
    fn now(&self) -> DateTime<Utc> {
        let d = &self.core.config().debug;
        let offset = if d.test_hooks {
            d.backup_clock_offset
        } else {
            chrono::TimeDelta::zero()
        };
        Utc::now() + offset
    }
}

impl Actor for BackupActor {
    type Msg = BackupMsg;
    type State = BackupState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<BackupMsg>,
        _: (),
    ) -> Result<BackupState, ActorProcessingErr> {
        let schedule = self.core.config().backup.schedule.clone();
        if self.core.store().is_postgres() {
            tracing::info!(target: "televibe.backup", reason = crate::store::OPERATOR_BACKUPS, "Scheduled backups skipped");
            return Ok(BackupState {
                schedule,
                next: None,
            });
        }
        let newest = crate::backup::list_local(&self.core.layout().backups())
            .last()
            .map(|b| b.time);
        // The gauge starts from the newest file, so a restart does not look like a stale backup.
        if let Some(t) = newest {
            self.core
                .metrics()
                .backup_last_success_timestamp
                .set(t.timestamp());
        }
        let now = self.now();
        let next = if crate::backup::missed(&schedule, newest, now) {
            tracing::info!(target: "televibe.backup", newest = ?newest, "A scheduled backup was missed: running one now");
            Some(now)
        } else {
            schedule.next_after(now)
        };
        myself.send_interval(Duration::from_secs(1), || BackupMsg::Tick);
        Ok(BackupState { schedule, next })
    }

    async fn handle(
        &self,
        _: ActorRef<BackupMsg>,
        msg: BackupMsg,
        st: &mut BackupState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BackupMsg::Tick => {
                let now = self.now();
                if let Some(due) = st.next.filter(|due| now >= *due) {
                    // Named after its slot (the 06:00 run is `…T06-00-00`) however late the tick came.
                    let _ = run_and_report(&self.core, due).await;
                    st.next = st.schedule.next_after(self.now());
                }
            }
            BackupMsg::RunNow(reply) => {
                let _ = reply.send(run_and_report(&self.core, self.now()).await);
            }
            BackupMsg::Panic => panic!("injected panic in backup actor"),
        }
        Ok(())
    }
}

/// One run with the daemon's store, breakers and metrics; logs the outcome and tells the admin chat
/// (a `backup.failed` outbox event) when the backup or its upload failed.
pub async fn run_and_report(core: &Core, now: DateTime<Utc>) -> Result<Outcome, String> {
    if core.store().is_postgres() {
        // Nothing failed: there is nothing of the daemon's to copy.
        return Err(crate::store::OPERATOR_BACKUPS.to_string());
    }
    let runner = Runner {
        store: core.store(),
        layout: core.layout(),
        remote: core.config().backup.remote.as_ref(),
        breakers: core.breakers(),
        metrics: core.metrics(),
    };
    let result = runner.run(now).await;
    match &result {
        Ok(o) => {
            tracing::info!(target: "televibe.backup", file = %o.file, bytes = o.bytes, duration_secs = o.duration_secs, "Backup written and verified");
            if let Some(r) = o.remote.as_ref().filter(|r| !r.ok) {
                tracing::error!(target: "televibe.backup", file = %o.file, error = %r.detail, "Backup upload failed; the local backup is kept");
                core.events()
                    .emit(
                        Scope::daemon(),
                        Event::BackupFailed {
                            stage: "remote".into(),
                            file: Some(o.file.clone()),
                            error: r.detail.clone(),
                        },
                    )
                    .await;
            }
        }
        Err(e) => {
            tracing::error!(target: "televibe.backup", error = %e, "Backup failed; earlier backups are untouched");
            core.events()
                .emit(
                    Scope::daemon(),
                    Event::BackupFailed {
                        stage: "local".into(),
                        file: None,
                        error: e.to_string(),
                    },
                )
                .await;
        }
    }
    result
}

//! Scheduled instructions: an instruction queued in a session at each occurrence of a five-field UTC cron
//! (`/every`, `schedule_instruction`), with the backup schedule's parser (`backup::Schedule`).
//!
//! The `scheduler` actor ticks every second and calls [`Schedules::tick`]: the earliest next run is kept in
//! memory, so an idle tick reads nothing. A due schedule runs once however many occurrences passed (a run
//! missed while the daemon was down runs once at start), then moves on to its next occurrence after now;
//! the schedule's advance and its job are written in one transaction (`Sessions::run_scheduled`), so an
//! occurrence queues exactly one job, across crashes and restarts too. A schedule whose session closes is
//! removed at the close (or, when the session closed another way, at its next due time) and the session's
//! chat is told (`schedule.removed`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

use crate::audit::{AuditSubject, Audited};
use crate::backup::Schedule as Cron;
use crate::core::Core;
use crate::core::events::{Event, Scope};
use crate::domain::{ScheduleId, ScheduledInstruction, Session, SessionState};
use crate::errors::{CoreError, ErrorCode};
use crate::store::NewSchedule;

/// The audit actor of scheduled runs and of removals the scheduler finds.
pub const SCHEDULER: &str = "scheduler";

/// How long a run that failed for a passing reason (a read-only store, a session closing) waits.
const RETRY: TimeDelta = TimeDelta::seconds(30);

/// The schedules service: create, list and cancel schedules; the scheduler's tick; removal at a close.
pub struct Schedules<'a> {
    pub(super) core: &'a Core,
}

/// What the schedules service owns: the earliest next run (the scheduler reads the store only when it
/// comes, or after a change) and the test hook's shift of the clock.
#[derive(Default)]
pub struct State {
    /// The earliest `next_run_at` of the schedules, as last read (`None`: no schedule).
    next_due: Mutex<Option<DateTime<Utc>>>,
    /// Set once the schedules were read; cleared by every change, so the next tick reads them again.
    known: AtomicBool,
    /// Seconds `debug_shift_scheduler_clock` moved the clock on (only with `debug.test_hooks`).
    shift_secs: AtomicI64,
}

/// The refusal of a cron that is not five valid fields, or never occurs.
fn invalid_cron(message: String) -> CoreError {
    CoreError::new(
        ErrorCode::InvalidSchedule,
        message,
        "give five fields in UTC: minute hour day-of-month month day-of-week, e.g. 0 9 * * 1-5 \
         (09:00 UTC on weekdays) or */30 * * * * (every half hour)",
    )
}

fn not_found(id: &str) -> CoreError {
    CoreError::new(
        ErrorCode::ScheduleNotFound,
        format!("no schedule {id:?}"),
        "list schedules with list_schedules (/schedules); ids look like SC3",
    )
}

/// The event scope of a schedule: its session.
fn scope(s: &ScheduledInstruction) -> Scope {
    Scope {
        session_id: Some(s.session_id.clone()),
        ..Scope::default()
    }
}

fn subject(s: &ScheduledInstruction) -> AuditSubject {
    AuditSubject {
        session_id: Some(s.session_id.clone()),
        ..Default::default()
    }
}

/// The occurrence a due run stands for and the next one: the latest occurrence reached stands for every
/// one missed since `due` (a daemon down for hours runs once, not once per occurrence), and the next is
/// the first after `now`. `None` when the cron never occurs again.
fn this_run(
    cron: &Cron,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let occurrence = cron.previous(now).map_or(due, |p| p.max(due));
    Some((occurrence, cron.next_after(now)?))
}

/// What became of one due schedule.
enum Ran {
    Done,
    /// Try again shortly: nothing was written.
    Later,
}

impl Schedules<'_> {
    fn state(&self) -> &State {
        &self.core.schedules_state
    }

    /// The scheduler's clock: UTC now, shifted by `debug.scheduler_clock_offset_secs` and
    /// `debug_shift_scheduler_clock` when test hooks are on.
    pub fn now(&self) -> DateTime<Utc> {
        let d = &self.core.config().debug;
        if !d.test_hooks {
            return Utc::now();
        }
        let shift = TimeDelta::try_seconds(self.state().shift_secs.load(Ordering::SeqCst))
            .unwrap_or_default();
        Utc::now()
            .checked_add_signed(d.scheduler_clock_offset + shift)
            .unwrap_or_else(Utc::now)
    }

    /// Test hook: moves the scheduler's clock on by `secs` (only with `debug.test_hooks`); answers the
    /// clock's new time.
    pub fn shift_clock(&self, secs: i64) -> DateTime<Utc> {
        if self.core.config().debug.test_hooks {
            // Held within a century either way, like the configured offset.
            const CENTURY: i64 = 100 * 366 * 86_400;
            let _ = self
                .state()
                .shift_secs
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                    Some(s.saturating_add(secs).clamp(-CENTURY, CENTURY))
                });
        }
        self.now()
    }

    /// The schedules changed: the next tick reads them again.
    pub fn changed(&self) {
        self.state().known.store(false, Ordering::SeqCst);
    }

    /// Schedules `instruction` in an open session at each occurrence of `cron` (five fields, UTC). The
    /// cron, the instruction (as `run_instruction` checks it), the session and the agent are checked first:
    /// a refusal writes nothing.
    pub async fn schedule_instruction(
        &self,
        by: &str,
        session_id: &str,
        cron: &str,
        instruction: &str,
        agent: Option<&str>,
    ) -> Result<ScheduledInstruction, CoreError> {
        let expr = cron.split_whitespace().collect::<Vec<_>>().join(" ");
        let parsed = Cron::parse(&expr).map_err(|e| invalid_cron(e.to_string()))?;
        crate::core::sessions::check_instruction(instruction)?;
        let session = self.core.sessions().get_session(session_id).await?;
        if matches!(session.state, SessionState::Closing | SessionState::Closed) {
            return Err(CoreError::new(
                ErrorCode::SessionClosing,
                format!("session {} is {}", session.id, session.state.as_str()),
                "schedule in an open session (/new, create_session)",
            ));
        }
        let agent = match agent.map(str::trim).filter(|a| !a.is_empty()) {
            Some(a) => Some(
                crate::agents::choose(Some(a), &session, &self.core.config().agent.names())?
                    .name()
                    .to_string(),
            ),
            None => None,
        };
        let Some(next) = parsed.next_after(self.now()) else {
            return Err(invalid_cron(format!("{expr:?} never occurs")));
        };
        let new = NewSchedule {
            session_id: session.id.clone(),
            cron: expr,
            instruction: instruction.to_string(),
            agent,
            created_by: by.to_string(),
            next_run_at: next,
        };
        let Some(s) = self.core.store().insert_schedule(&new).await? else {
            return Err(CoreError::new(
                ErrorCode::SessionClosing,
                format!("session {} was closed", session.id),
                "schedule in an open session (/new, create_session)",
            ));
        };
        self.changed();
        tracing::info!(target: "televibe.schedules", schedule_id = %s.id, session_id = %s.session_id, cron = %s.cron, next_run_at = %s.next_run_at, "Instruction scheduled");
        self.core
            .events()
            .audit(
                by,
                AuditSubject::session(&session),
                Audited::ScheduleCreated {
                    schedule_id: s.id.clone(),
                    cron: s.cron.clone(),
                    instruction: s.instruction.clone(),
                    next_run_at: s.next_run_at.to_rfc3339(),
                },
            )
            .await;
        Ok(s)
    }

    /// The schedules not removed, of one session or of all, oldest first.
    pub async fn list_schedules(
        &self,
        session_id: Option<&str>,
    ) -> Result<Vec<ScheduledInstruction>, CoreError> {
        let session = match session_id {
            Some(id) => Some(self.core.sessions().get_session(id).await?.id),
            None => None,
        };
        Ok(self
            .core
            .store()
            .active_schedules(session.as_deref())
            .await?)
    }

    /// One schedule by id (`SC3`, `sc3`), removed ones included.
    pub async fn get_schedule(&self, id: &str) -> Result<ScheduledInstruction, CoreError> {
        let sid = ScheduleId::parse(id.trim()).ok_or_else(|| not_found(id))?;
        self.core
            .store()
            .schedule(&sid.to_string())
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// Cancels a schedule: it runs no more (a job it queued already is not touched). A schedule removed
    /// already is answered as it is.
    pub async fn cancel_schedule(
        &self,
        by: &str,
        id: &str,
    ) -> Result<ScheduledInstruction, CoreError> {
        let s = self.get_schedule(id).await?;
        if s.removed_at.is_some() {
            return Ok(s);
        }
        if self
            .core
            .store()
            .remove_schedule(&s.id, by, "canceled")
            .await?
        {
            self.changed();
            tracing::info!(target: "televibe.schedules", schedule_id = %s.id, by, "Schedule canceled");
            self.core
                .events()
                .audit(
                    by,
                    subject(&s),
                    Audited::ScheduleCanceled {
                        schedule_id: s.id.clone(),
                    },
                )
                .await;
        }
        self.get_schedule(&s.id).await
    }

    /// A session closed (or was replaced): its schedules are removed and its chat told. Called by
    /// whoever closes it; the scheduler does the same for a session it finds closed at a due time.
    pub async fn session_closed(&self, by: &str, session: &Session, reason: &str) {
        let Ok(list) = self.core.store().active_schedules(Some(&session.id)).await else {
            // Found again at its next due time.
            return;
        };
        for s in list {
            self.remove(by, &s, reason).await;
        }
    }

    /// Removes a schedule whose session is gone, with its audit record and the chat's notice. False when
    /// it could not be written (retried later).
    async fn remove(&self, by: &str, s: &ScheduledInstruction, reason: &str) -> bool {
        match self.core.store().remove_schedule(&s.id, by, reason).await {
            Ok(true) => {}
            Ok(false) => return true,
            Err(e) => {
                tracing::warn!(target: "televibe.schedules", schedule_id = %s.id, error = %e, "schedule not removed; retried later");
                return false;
            }
        }
        self.changed();
        tracing::info!(target: "televibe.schedules", schedule_id = %s.id, session_id = %s.session_id, reason, "Schedule removed");
        self.core
            .events()
            .audit(
                by,
                subject(s),
                Audited::ScheduleRemoved {
                    schedule_id: s.id.clone(),
                    reason: reason.to_string(),
                },
            )
            .await;
        self.core
            .events()
            .emit(
                scope(s),
                Event::ScheduleRemoved {
                    schedule_id: s.id.clone(),
                    cron: s.cron.clone(),
                    instruction_preview: crate::text::preview(&s.instruction),
                    reason: reason.to_string(),
                },
            )
            .await;
        true
    }

    /// The scheduler's tick: runs every schedule whose time has come, once each.
    pub async fn tick(&self) {
        let now = self.now();
        if !self.state().known.swap(true, Ordering::SeqCst) {
            self.reload().await;
        }
        let next_due = *self.lock_next_due();
        if next_due.is_none_or(|t| t > now) {
            return;
        }
        let due = match self.core.store().active_schedules(None).await {
            Ok(all) => all.into_iter().filter(|s| s.next_run_at <= now),
            Err(e) => {
                tracing::warn!(target: "televibe.schedules", error = %e, "schedules unreadable; retrying");
                *self.lock_next_due() = Some(now + RETRY);
                return;
            }
        };
        let mut later = false;
        for s in due {
            if let Ran::Later = self.run(&s, now).await {
                later = true;
            }
        }
        let all = self.reload().await;
        if later {
            // What failed waits; a schedule due sooner still runs on time.
            let sooner = all
                .iter()
                .flatten()
                .map(|s| s.next_run_at)
                .filter(|t| *t > now);
            *self.lock_next_due() = Some(sooner.fold(now + RETRY, DateTime::min));
        }
    }

    fn lock_next_due(&self) -> std::sync::MutexGuard<'_, Option<DateTime<Utc>>> {
        self.state()
            .next_due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the earliest next run again; answers the schedules read.
    async fn reload(&self) -> Option<Vec<ScheduledInstruction>> {
        match self.core.store().active_schedules(None).await {
            Ok(all) => {
                *self.lock_next_due() = all.iter().map(|s| s.next_run_at).min();
                Some(all)
            }
            Err(e) => {
                tracing::warn!(target: "televibe.schedules", error = %e, "schedules unreadable; retrying");
                self.changed();
                None
            }
        }
    }

    /// One due schedule: its job queued (once, whatever number of occurrences passed), or the occurrence
    /// skipped with a notice, or the schedule removed when its session is gone.
    async fn run(&self, s: &ScheduledInstruction, now: DateTime<Utc>) -> Ran {
        let cron = match Cron::parse(&s.cron) {
            Ok(c) => c,
            Err(e) => {
                let why = format!("its cron no longer parses: {e}");
                return self.removed(s, &why).await;
            }
        };
        let Some((occurrence, next)) = this_run(&cron, s.next_run_at, now) else {
            return self.removed(s, "its cron has no further occurrence").await;
        };
        // The previous run has not started or not ended yet: this occurrence adds nothing but a longer
        // queue (a schedule faster than its job would fill it), so it is passed over quietly.
        if let Some(last) = &s.last_job_id
            && let Ok(Some(job)) = self.core.store().job(last).await
            && !job.status.is_final()
        {
            tracing::info!(target: "televibe.schedules", schedule_id = %s.id, job_id = %job.id, occurrence = %occurrence, "Scheduled run passed over: the previous run has not ended");
            return self.skip(s, occurrence, next, None).await;
        }
        match self
            .core
            .sessions()
            .run_scheduled(s, occurrence, next)
            .await
        {
            Ok(Some(q)) => {
                tracing::info!(target: "televibe.schedules", schedule_id = %s.id, job_id = %q.job.id, occurrence = %occurrence, "Scheduled instruction queued");
                self.core
                    .events()
                    .audit(
                        SCHEDULER,
                        AuditSubject::job(&q.job),
                        Audited::ScheduleRan {
                            schedule_id: s.id.clone(),
                            occurrence: occurrence.to_rfc3339(),
                            created_by: s.created_by.clone(),
                        },
                    )
                    .await;
                Ran::Done
            }
            // Another run came first, or the schedule was removed meanwhile.
            Ok(None) => Ran::Done,
            Err(e)
                if matches!(
                    e.code,
                    ErrorCode::SessionNotFound | ErrorCode::SessionClosing
                ) =>
            {
                self.session_gone(s).await
            }
            Err(e) if matches!(e.code, ErrorCode::ReadOnly | ErrorCode::InternalError) => {
                tracing::warn!(target: "televibe.schedules", schedule_id = %s.id, error = %e, "scheduled run not queued; retrying");
                Ran::Later
            }
            Err(e) => self.skip(s, occurrence, next, Some(&e.message)).await,
        }
    }

    /// Removes a schedule from the scheduler's run: done, or retried later when it could not be written.
    async fn removed(&self, s: &ScheduledInstruction, reason: &str) -> Ran {
        if self.remove(SCHEDULER, s, reason).await {
            Ran::Done
        } else {
            Ran::Later
        }
    }

    /// A run found its session not open: a close still under way is waited for, a closed or missing
    /// session removes the schedule.
    async fn session_gone(&self, s: &ScheduledInstruction) -> Ran {
        match self.core.store().session(&s.session_id).await {
            Ok(Some(session)) if session.state != SessionState::Closed => Ran::Later,
            Ok(_) => {
                let reason = format!("its session {} was closed", s.session_id);
                self.removed(s, &reason).await
            }
            Err(_) => Ran::Later,
        }
    }

    /// An occurrence that cannot queue its job (a full queue, an agent no longer configured): the schedule
    /// moves on and the chat is told why (`reason`; `None`: passed over quietly).
    async fn skip(
        &self,
        s: &ScheduledInstruction,
        occurrence: DateTime<Utc>,
        next: DateTime<Utc>,
        reason: Option<&str>,
    ) -> Ran {
        match self
            .core
            .store()
            .skip_schedule_run(&s.id, s.runs, next)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Ran::Done,
            Err(_) => return Ran::Later,
        }
        let Some(reason) = reason else {
            return Ran::Done;
        };
        tracing::warn!(target: "televibe.schedules", schedule_id = %s.id, occurrence = %occurrence, reason, "Scheduled run skipped");
        self.core
            .events()
            .emit(
                scope(s),
                Event::ScheduleSkipped {
                    schedule_id: s.id.clone(),
                    occurrence: occurrence.to_rfc3339(),
                    reason: reason.to_string(),
                },
            )
            .await;
        Ran::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, sec: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, h, m, sec).unwrap()
    }

    #[test]
    fn a_run_stands_for_every_occurrence_it_missed_and_the_next_is_after_now() {
        let hourly = Cron::parse("0 * * * *").unwrap();
        // On time (the tick a second late): the occurrence itself, the next hour.
        assert_eq!(
            this_run(&hourly, at(10, 0, 0), at(10, 0, 1)),
            Some((at(10, 0, 0), at(11, 0, 0)))
        );
        // Down from 09:30 to 13:20: one run, for 13:00, then 14:00.
        assert_eq!(
            this_run(&hourly, at(10, 0, 0), at(13, 20, 0)),
            Some((at(13, 0, 0), at(14, 0, 0)))
        );
        let minutely = Cron::parse("* * * * *").unwrap();
        assert_eq!(
            this_run(&minutely, at(10, 5, 0), at(10, 5, 0)),
            Some((at(10, 5, 0), at(10, 6, 0)))
        );
    }

    #[test]
    fn a_cron_that_never_occurs_has_no_next_run() {
        let never = Cron::parse("0 0 30 2 *").unwrap();
        assert_eq!(never.next_after(at(10, 0, 0)), None);
        assert_eq!(this_run(&never, at(10, 0, 0), at(10, 0, 0)), None);
    }
}

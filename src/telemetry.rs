//! Prometheus metrics: every family of the operations spec, with its labels and buckets, plus supervision counters.
//!
//! Labels are bounded sets (ids of projects, sessions, jobs, breaker and actor names), never chat ids or free text.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::breaker::names::{BreakerName, BreakerState};

/// The `Content-Type` of `/metrics`: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The results `televibe_backups_total` counts.
pub const BACKUP_RESULTS: [&str; 3] = ["success", "failure", "remote_failure"];

type FloatGauge = Gauge<f64, AtomicU64>;
type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActorLabel {
    pub actor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabel {
    pub check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectLabel {
    pub project_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectStateLabel {
    pub project_id: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectStatusLabel {
    pub project_id: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabel {
    pub session_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabel {
    pub scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeResultLabel {
    pub scope: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventTypeLabel {
    pub event_type: String,
}

fn session_buckets() -> Histogram {
    Histogram::new([60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0])
}
fn job_buckets() -> Histogram {
    Histogram::new([10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0])
}
fn approval_buckets() -> Histogram {
    Histogram::new([10.0, 30.0, 60.0, 300.0, 900.0, 3600.0])
}
fn backup_buckets() -> Histogram {
    Histogram::new([0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0])
}
fn delivery_buckets() -> Histogram {
    Histogram::new([0.1, 0.5, 1.0, 2.0, 5.0, 10.0])
}

/// Every family as exposed: name, type, help. The exposition lists each one with HELP and TYPE from the
/// start, even before its first sample (prometheus-client leaves an empty family out).
pub const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "televibe_sessions_total",
        "counter",
        "Total sessions created",
    ),
    (
        "televibe_sessions_active",
        "gauge",
        "Currently active sessions",
    ),
    (
        "televibe_session_duration_seconds",
        "histogram",
        "Session lifetime duration",
    ),
    (
        "televibe_session_last_activity_timestamp",
        "gauge",
        "Unix time of the last activity of a session",
    ),
    ("televibe_jobs_total", "counter", "Total jobs processed"),
    ("televibe_jobs_active", "gauge", "Currently running jobs"),
    (
        "televibe_job_duration_seconds",
        "histogram",
        "Job execution duration",
    ),
    ("televibe_job_queue_size", "gauge", "Jobs waiting in queue"),
    (
        "televibe_job_start_timestamp",
        "gauge",
        "Unix time a running job started",
    ),
    (
        "televibe_approvals_total",
        "counter",
        "Total approval requests",
    ),
    (
        "televibe_approvals_pending",
        "gauge",
        "Currently pending approvals",
    ),
    (
        "televibe_approval_response_seconds",
        "histogram",
        "Time to approve/deny",
    ),
    ("televibe_events_total", "counter", "Total events emitted"),
    (
        "televibe_event_delivery_seconds",
        "histogram",
        "Time from emit to Telegram delivery",
    ),
    (
        "televibe_notifications_dropped_total",
        "counter",
        "Progress notifications dropped because the queue was full",
    ),
    (
        "televibe_circuit_breaker_state",
        "gauge",
        "Circuit breaker state (1=closed, 0.5=half-open, 0=open)",
    ),
    (
        "televibe_circuit_breaker_failures_total",
        "counter",
        "Circuit breaker failure count",
    ),
    (
        "televibe_workspace_disk_bytes",
        "gauge",
        "Disk usage per workspace",
    ),
    ("televibe_log_file_bytes", "gauge", "Log file size per job"),
    (
        "televibe_actor_restarts_total",
        "counter",
        "Restarts of a supervised actor",
    ),
    (
        "televibe_health_check",
        "gauge",
        "Result of the last health check (1=ok, 0=failed)",
    ),
    (
        "televibe_database_read_only",
        "gauge",
        "1 while the store refuses writes after a write failure",
    ),
    (
        "televibe_start_time_seconds",
        "gauge",
        "Unix time the daemon started",
    ),
    (
        "televibe_backup_last_success_timestamp",
        "gauge",
        "Unix time of the last verified backup",
    ),
    (
        "televibe_backups_total",
        "counter",
        "Backup runs by result (success, failure, remote_failure)",
    ),
    (
        "televibe_backup_duration_seconds",
        "histogram",
        "Duration of a backup run (copy, check, compression, upload)",
    ),
    (
        "televibe_backup_bytes",
        "gauge",
        "Size in bytes of the last backup file",
    ),
];

/// The job statuses every registered project has a `televibe_jobs_total` sample for from the start.
const FINAL_STATUSES: [&str; 3] = ["done", "failed", "canceled"];

/// All metric families, registered once per daemon (not a process global, so tests can run several).
pub struct Metrics {
    registry: Registry,
    pub sessions_total: Family<ProjectLabel, Counter>,
    pub sessions_active: Family<ProjectStateLabel, Gauge>,
    pub session_duration_seconds: HistFamily<ProjectLabel>,
    pub session_last_activity_timestamp: Family<SessionLabel, Gauge>,
    pub jobs_total: Family<ProjectStatusLabel, Counter>,
    pub jobs_active: Family<ProjectLabel, Gauge>,
    pub job_duration_seconds: HistFamily<ProjectStatusLabel>,
    pub job_queue_size: Family<SessionLabel, Gauge>,
    pub job_start_timestamp: Family<JobLabel, Gauge>,
    pub approvals_total: Family<ScopeResultLabel, Counter>,
    pub approvals_pending: Gauge,
    pub approval_response_seconds: HistFamily<ScopeLabel>,
    pub events_total: Family<EventTypeLabel, Counter>,
    pub event_delivery_seconds: HistFamily<EventTypeLabel>,
    pub notifications_dropped_total: Counter,
    pub circuit_breaker_state: Family<NameLabel, FloatGauge>,
    pub circuit_breaker_failures_total: Family<NameLabel, Counter>,
    pub workspace_disk_bytes: Family<SessionLabel, Gauge>,
    pub log_file_bytes: Family<JobLabel, Gauge>,
    pub actor_restarts_total: Family<ActorLabel, Counter>,
    pub health_check: Family<CheckLabel, Gauge>,
    pub database_read_only: Gauge,
    pub start_time_seconds: Gauge,
    pub backup_last_success_timestamp: Gauge,
    pub backups_total: Family<ResultLabel, Counter>,
    pub backup_duration_seconds: Histogram,
    pub backup_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            sessions_total: Family::default(),
            sessions_active: Family::default(),
            session_duration_seconds: Family::new_with_constructor(session_buckets),
            session_last_activity_timestamp: Family::default(),
            jobs_total: Family::default(),
            jobs_active: Family::default(),
            job_duration_seconds: Family::new_with_constructor(job_buckets),
            job_queue_size: Family::default(),
            job_start_timestamp: Family::default(),
            approvals_total: Family::default(),
            approvals_pending: Gauge::default(),
            approval_response_seconds: Family::new_with_constructor(approval_buckets),
            events_total: Family::default(),
            event_delivery_seconds: Family::new_with_constructor(delivery_buckets),
            notifications_dropped_total: Counter::default(),
            circuit_breaker_state: Family::default(),
            circuit_breaker_failures_total: Family::default(),
            workspace_disk_bytes: Family::default(),
            log_file_bytes: Family::default(),
            actor_restarts_total: Family::default(),
            health_check: Family::default(),
            database_read_only: Gauge::default(),
            start_time_seconds: Gauge::default(),
            backup_last_success_timestamp: Gauge::default(),
            backups_total: Family::default(),
            backup_duration_seconds: backup_buckets(),
            backup_bytes: Gauge::default(),
        };
        m.register_all();
        for name in BreakerName::ALL {
            m.set_breaker_state(name, BreakerState::Closed);
            // Touch the counter so every breaker has a sample from the start.
            let _ = m.circuit_breaker_failures_total.get_or_create(&NameLabel {
                name: name.as_str().into(),
            });
        }
        // Every result has a sample from the start, so a rate over it is defined before the first failure.
        for result in BACKUP_RESULTS {
            let _ = m.backups_total.get_or_create(&ResultLabel {
                result: result.into(),
            });
        }
        m.start_time_seconds.set(chrono::Utc::now().timestamp());
        m
    }

    fn register_all(&mut self) {
        // prometheus-client appends `_total` to counters itself, so counters are registered without it.
        let r = &mut self.registry;
        r.register(
            "televibe_sessions",
            "Total sessions created",
            self.sessions_total.clone(),
        );
        r.register(
            "televibe_sessions_active",
            "Currently active sessions",
            self.sessions_active.clone(),
        );
        r.register(
            "televibe_session_duration_seconds",
            "Session lifetime duration",
            self.session_duration_seconds.clone(),
        );
        r.register(
            "televibe_session_last_activity_timestamp",
            "Unix time of the last activity of a session",
            self.session_last_activity_timestamp.clone(),
        );
        r.register(
            "televibe_jobs",
            "Total jobs processed",
            self.jobs_total.clone(),
        );
        r.register(
            "televibe_jobs_active",
            "Currently running jobs",
            self.jobs_active.clone(),
        );
        r.register(
            "televibe_job_duration_seconds",
            "Job execution duration",
            self.job_duration_seconds.clone(),
        );
        r.register(
            "televibe_job_queue_size",
            "Jobs waiting in queue",
            self.job_queue_size.clone(),
        );
        r.register(
            "televibe_job_start_timestamp",
            "Unix time a running job started",
            self.job_start_timestamp.clone(),
        );
        r.register(
            "televibe_approvals",
            "Total approval requests",
            self.approvals_total.clone(),
        );
        r.register(
            "televibe_approvals_pending",
            "Currently pending approvals",
            self.approvals_pending.clone(),
        );
        r.register(
            "televibe_approval_response_seconds",
            "Time to approve/deny",
            self.approval_response_seconds.clone(),
        );
        r.register(
            "televibe_events",
            "Total events emitted",
            self.events_total.clone(),
        );
        r.register(
            "televibe_event_delivery_seconds",
            "Time from emit to Telegram delivery",
            self.event_delivery_seconds.clone(),
        );
        r.register(
            "televibe_notifications_dropped",
            "Progress notifications dropped because the queue was full",
            self.notifications_dropped_total.clone(),
        );
        r.register(
            "televibe_circuit_breaker_state",
            "Circuit breaker state (1=closed, 0.5=half-open, 0=open)",
            self.circuit_breaker_state.clone(),
        );
        r.register(
            "televibe_circuit_breaker_failures",
            "Circuit breaker failure count",
            self.circuit_breaker_failures_total.clone(),
        );
        r.register(
            "televibe_workspace_disk_bytes",
            "Disk usage per workspace",
            self.workspace_disk_bytes.clone(),
        );
        r.register(
            "televibe_log_file_bytes",
            "Log file size per job",
            self.log_file_bytes.clone(),
        );
        r.register(
            "televibe_actor_restarts",
            "Restarts of a supervised actor",
            self.actor_restarts_total.clone(),
        );
        r.register(
            "televibe_health_check",
            "Result of the last health check (1=ok, 0=failed)",
            self.health_check.clone(),
        );
        r.register(
            "televibe_database_read_only",
            "1 while the store refuses writes after a write failure",
            self.database_read_only.clone(),
        );
        r.register(
            "televibe_start_time_seconds",
            "Unix time the daemon started",
            self.start_time_seconds.clone(),
        );
        r.register(
            "televibe_backup_last_success_timestamp",
            "Unix time of the last verified backup",
            self.backup_last_success_timestamp.clone(),
        );
        r.register(
            "televibe_backups",
            "Backup runs by result (success, failure, remote_failure)",
            self.backups_total.clone(),
        );
        r.register(
            "televibe_backup_duration_seconds",
            "Duration of a backup run (copy, check, compression, upload)",
            self.backup_duration_seconds.clone(),
        );
        r.register(
            "televibe_backup_bytes",
            "Size in bytes of the last backup file",
            self.backup_bytes.clone(),
        );
    }

    /// Counts one backup outcome (`success`, `failure` or `remote_failure`).
    pub fn backup_result(&self, result: &str) {
        self.backups_total
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// The text exposition (format 0.0.4) of every family, the empty ones with HELP and TYPE only, and the
    /// process's own (`process_*`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        let body_end = out.rfind("# EOF").unwrap_or(out.len());
        let mut extra = String::new();
        for (name, kind, help) in FAMILIES {
            if !out.contains(&format!("# TYPE {name} ")) {
                extra += &format!("# HELP {name} {help}.\n# TYPE {name} {kind}\n");
            }
        }
        extra += &crate::process_metrics::exposition();
        out.insert_str(body_end, &extra);
        out
    }

    /// Gives a registered project its known series at 0: sessions and jobs created, jobs running, and
    /// finished jobs by each final status.
    pub fn project_known(&self, project_id: &str) {
        let project = ProjectLabel {
            project_id: project_id.into(),
        };
        let _ = self.sessions_total.get_or_create(&project);
        let _ = self.jobs_active.get_or_create(&project);
        for status in FINAL_STATUSES {
            let _ = self.jobs_total.get_or_create(&ProjectStatusLabel {
                project_id: project_id.into(),
                status: status.into(),
            });
        }
    }

    pub fn set_breaker_state(&self, name: BreakerName, state: BreakerState) {
        self.circuit_breaker_state
            .get_or_create(&NameLabel {
                name: name.as_str().into(),
            })
            .set(state.gauge());
    }

    pub fn breaker_gauge(&self, name: BreakerName) -> f64 {
        self.circuit_breaker_state
            .get_or_create(&NameLabel {
                name: name.as_str().into(),
            })
            .get()
    }

    pub fn breaker_failure(&self, name: BreakerName) {
        self.circuit_breaker_failures_total
            .get_or_create(&NameLabel {
                name: name.as_str().into(),
            })
            .inc();
    }

    /// Makes an actor's restart counter exist at 0 before its first restart.
    pub fn register_actor(&self, actor: &str) {
        let _ = self.actor_restarts_total.get_or_create(&ActorLabel {
            actor: actor.into(),
        });
    }

    pub fn actor_restarted(&self, actor: &str) {
        self.actor_restarts_total
            .get_or_create(&ActorLabel {
                actor: actor.into(),
            })
            .inc();
    }

    pub fn set_log_bytes(&self, job_id: &str, bytes: u64) {
        self.log_file_bytes
            .get_or_create(&JobLabel {
                job_id: job_id.into(),
            })
            .set(bytes as i64);
    }

    pub fn set_health(&self, check: &str, ok: bool) {
        self.health_check
            .get_or_create(&CheckLabel {
                check: check.into(),
            })
            .set(i64::from(ok));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_spec_names_and_buckets() {
        let m = Metrics::new();
        m.job_duration_seconds
            .get_or_create(&ProjectStatusLabel {
                project_id: "myapp".into(),
                status: "done".into(),
            })
            .observe(42.0);
        let text = m.encode();
        assert!(
            text.contains("# TYPE televibe_circuit_breaker_state gauge"),
            "{text}"
        );
        assert!(
            text.contains("televibe_circuit_breaker_state{name=\"claude_code\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE televibe_circuit_breaker_failures_total counter"),
            "{text}"
        );
        assert!(text.contains("televibe_job_duration_seconds_bucket{project_id=\"myapp\",status=\"done\",le=\"60\"} 1"), "{text}");
        assert!(text.contains("le=\"1800\""), "{text}");
    }
}

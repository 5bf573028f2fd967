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

use crate::domain::breaker::{BreakerName, BreakerState};

mod registry;
pub use registry::FAMILIES;

/// The `Content-Type` of `/metrics`: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The causes `televibe_database_read_only_reason{reason}` tells apart (`store::ReadOnlyCause`).
pub const READ_ONLY_REASONS: [&str; 4] = ["disk_full", "io_error", "read_only_file", "integrity"];

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
pub struct ReasonLabel {
    pub reason: String,
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
    pub notification_queue_size: Gauge,
    pub notification_queue_peak: Gauge,
    pub circuit_breaker_state: Family<NameLabel, FloatGauge>,
    pub circuit_breaker_failures_total: Family<NameLabel, Counter>,
    pub workspace_disk_bytes: Family<SessionLabel, Gauge>,
    pub log_file_bytes: Family<JobLabel, Gauge>,
    pub actor_restarts_total: Family<ActorLabel, Counter>,
    pub health_check: Family<CheckLabel, Gauge>,
    pub database_read_only: Gauge,
    pub cluster_leader: Gauge,
    pub cluster_nodes: Gauge,
    /// 1 for the cause of read-only mode (`READ_ONLY_REASONS`), 0 for the others.
    pub database_read_only_reason: Family<ReasonLabel, Gauge>,
    pub start_time_seconds: Gauge,
    pub backup_last_success_timestamp: Gauge,
    pub backups_total: Family<ResultLabel, Counter>,
    pub backup_duration_seconds: Histogram,
    pub backup_bytes: Gauge,
    /// Connections a job's egress proxy refused (the host is in the log, not a label).
    pub egress_refused_total: Counter,
    /// SQL statements run on the state database (the walk of one instruction is measured with it).
    pub db_statements_total: Counter,
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
            notification_queue_size: Gauge::default(),
            notification_queue_peak: Gauge::default(),
            circuit_breaker_state: Family::default(),
            circuit_breaker_failures_total: Family::default(),
            workspace_disk_bytes: Family::default(),
            log_file_bytes: Family::default(),
            actor_restarts_total: Family::default(),
            health_check: Family::default(),
            database_read_only: Gauge::default(),
            cluster_leader: Gauge::default(),
            cluster_nodes: Gauge::default(),
            database_read_only_reason: Family::default(),
            start_time_seconds: Gauge::default(),
            backup_last_success_timestamp: Gauge::default(),
            backups_total: Family::default(),
            backup_duration_seconds: backup_buckets(),
            backup_bytes: Gauge::default(),
            egress_refused_total: Counter::default(),
            db_statements_total: Counter::default(),
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
        m.set_read_only_cause(None);
        m.start_time_seconds.set(chrono::Utc::now().timestamp());
        m
    }

    /// Marks `cause` (one of `READ_ONLY_REASONS`) as why the store is read-only, every other reason 0;
    /// `None`: writable, all 0.
    pub fn set_read_only_cause(&self, cause: Option<&str>) {
        for reason in READ_ONLY_REASONS {
            self.database_read_only_reason
                .get_or_create(&ReasonLabel {
                    reason: reason.into(),
                })
                .set(i64::from(cause == Some(reason)));
        }
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

//! Registration of every family under its exposed name and help, and the table the exposition uses to list
//! families before their first sample.

use super::Metrics;

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
        "televibe_notification_queue_size",
        "gauge",
        "Items in the notifier's memory queue (at most 1000)",
    ),
    (
        "televibe_notification_queue_peak",
        "gauge",
        "The most items the notifier's memory queue held since the start",
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
        "televibe_egress_refused_total",
        "counter",
        "Connections of sandboxed jobs the egress proxy refused (destination not allowed)",
    ),
    (
        "televibe_db_statements_total",
        "counter",
        "SQL statements the daemon ran on its state database",
    ),
    (
        "televibe_database_read_only",
        "gauge",
        "1 while the store refuses writes after a write failure",
    ),
    (
        "televibe_database_read_only_reason",
        "gauge",
        "Why the store is read-only: 1 for the cause (disk_full, io_error, read_only_file, integrity), 0 for the others",
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

impl Metrics {
    pub(super) fn register_all(&mut self) {
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
            "televibe_notification_queue_size",
            "Items in the notifier's memory queue (at most 1000)",
            self.notification_queue_size.clone(),
        );
        r.register(
            "televibe_notification_queue_peak",
            "The most items the notifier's memory queue held since the start",
            self.notification_queue_peak.clone(),
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
            "televibe_egress_refused",
            "Connections of sandboxed jobs the egress proxy refused (destination not allowed)",
            self.egress_refused_total.clone(),
        );
        r.register(
            "televibe_db_statements",
            "SQL statements the daemon ran on its state database",
            self.db_statements_total.clone(),
        );
        r.register(
            "televibe_database_read_only",
            "1 while the store refuses writes after a write failure",
            self.database_read_only.clone(),
        );
        r.register(
            "televibe_database_read_only_reason",
            "Why the store is read-only: 1 for the cause (disk_full, io_error, read_only_file, integrity), 0 for the others",
            self.database_read_only_reason.clone(),
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
}

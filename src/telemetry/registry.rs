//! Registration of every family under its exposed name and help, and the table the exposition uses to list
//! families before their first sample.

use prometheus_client::registry::{Metric, Registry};

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
        "televibe_cluster_leader",
        "gauge",
        "1 while this node is the leader (it runs the Telegram front, the notifier, backups and schedules); always 1 on one node",
    ),
    (
        "televibe_cluster_nodes",
        "gauge",
        "Nodes sharing the store that are up (a heartbeat within cluster.node_timeout_secs); 1 on one node",
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
    /// Registers every family under its exposed name, with the help `FAMILIES` gives it, in `FAMILIES`'
    /// order.
    pub(super) fn register_all(&mut self) {
        self.register_sessions_and_jobs();
        self.register_events_and_notifications();
        self.register_health();
        self.register_backups();
    }

    /// Sessions, jobs and approvals.
    fn register_sessions_and_jobs(&mut self) {
        let r = &mut self.registry;
        register(r, "televibe_sessions", self.sessions_total.clone());
        register(r, "televibe_sessions_active", self.sessions_active.clone());
        register(
            r,
            "televibe_session_duration_seconds",
            self.session_duration_seconds.clone(),
        );
        register(
            r,
            "televibe_session_last_activity_timestamp",
            self.session_last_activity_timestamp.clone(),
        );
        register(r, "televibe_jobs", self.jobs_total.clone());
        register(r, "televibe_jobs_active", self.jobs_active.clone());
        register(
            r,
            "televibe_job_duration_seconds",
            self.job_duration_seconds.clone(),
        );
        register(r, "televibe_job_queue_size", self.job_queue_size.clone());
        register(
            r,
            "televibe_job_start_timestamp",
            self.job_start_timestamp.clone(),
        );
        register(r, "televibe_approvals", self.approvals_total.clone());
        register(
            r,
            "televibe_approvals_pending",
            self.approvals_pending.clone(),
        );
        register(
            r,
            "televibe_approval_response_seconds",
            self.approval_response_seconds.clone(),
        );
    }

    /// Events and the notifier's queue.
    fn register_events_and_notifications(&mut self) {
        let r = &mut self.registry;
        register(r, "televibe_events", self.events_total.clone());
        register(
            r,
            "televibe_event_delivery_seconds",
            self.event_delivery_seconds.clone(),
        );
        register(
            r,
            "televibe_notifications_dropped",
            self.notifications_dropped_total.clone(),
        );
        register(
            r,
            "televibe_notification_queue_size",
            self.notification_queue_size.clone(),
        );
        register(
            r,
            "televibe_notification_queue_peak",
            self.notification_queue_peak.clone(),
        );
    }

    /// Breakers, disk, restarts, health, egress and the store.
    fn register_health(&mut self) {
        let r = &mut self.registry;
        register(
            r,
            "televibe_circuit_breaker_state",
            self.circuit_breaker_state.clone(),
        );
        register(
            r,
            "televibe_circuit_breaker_failures",
            self.circuit_breaker_failures_total.clone(),
        );
        register(
            r,
            "televibe_workspace_disk_bytes",
            self.workspace_disk_bytes.clone(),
        );
        register(r, "televibe_log_file_bytes", self.log_file_bytes.clone());
        register(
            r,
            "televibe_actor_restarts",
            self.actor_restarts_total.clone(),
        );
        register(r, "televibe_health_check", self.health_check.clone());
        register(
            r,
            "televibe_egress_refused",
            self.egress_refused_total.clone(),
        );
        register(
            r,
            "televibe_db_statements",
            self.db_statements_total.clone(),
        );
        register(r, "televibe_cluster_leader", self.cluster_leader.clone());
        register(r, "televibe_cluster_nodes", self.cluster_nodes.clone());
        register(
            r,
            "televibe_database_read_only",
            self.database_read_only.clone(),
        );
        register(
            r,
            "televibe_database_read_only_reason",
            self.database_read_only_reason.clone(),
        );
        register(
            r,
            "televibe_start_time_seconds",
            self.start_time_seconds.clone(),
        );
    }

    /// Backups.
    fn register_backups(&mut self) {
        let r = &mut self.registry;
        register(
            r,
            "televibe_backup_last_success_timestamp",
            self.backup_last_success_timestamp.clone(),
        );
        register(r, "televibe_backups", self.backups_total.clone());
        register(
            r,
            "televibe_backup_duration_seconds",
            self.backup_duration_seconds.clone(),
        );
        register(r, "televibe_backup_bytes", self.backup_bytes.clone());
    }
}

/// Registers a family under `name`: a counter without its `_total` (prometheus-client appends it), with the
/// help of its `FAMILIES` entry, so the two can never disagree.
fn register(r: &mut Registry, name: &str, metric: impl Metric) {
    let (_, _, help) = FAMILIES
        .iter()
        .find(|(family, kind, _)| {
            *family == name || (*kind == "counter" && family.strip_suffix("_total") == Some(name))
        })
        .unwrap_or_else(|| panic!("{name} is not in FAMILIES"));
    r.register(name, *help, metric);
}
